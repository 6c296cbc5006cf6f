"""ClamAV content milter, content rules, quarantine and outbreak mode (issue 6).

Pure logic (rules, MIME walking, decisions, outbreak trigger) imports without ``Milter``;
only :mod:`passerelle.antivirus.milter` needs the C binding.
"""
