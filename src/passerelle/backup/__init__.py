"""Backups of a Passerelle host and their restore (``passerelle backup ...``).

A backup is a folder of the backup directory named by its UTC time (``20250101T021500Z``),
holding one file per part and ``manifest.json`` (what, when, sizes, row and file counts,
sha256), written last: a folder without a manifest is an unfinished backup. Parts:

- ``database``: one MariaDB database dumped with ``mariadb-dump --single-transaction``
  (the database host: greylist, Bayes, the console's state), gzip-compressed;
- ``folder``: a folder archived with owners, modes and names (the quarantine, whose path is
  the antivirus config's, and ``/etc/passerelle``), a gzip-compressed tar;
- ``sqlite``: the embedded greylist store of a gateway without the shared database,
  copied with SQLite's backup API (a consistent copy of a live WAL database).

``model`` and ``dumpcount`` are the pure logic (names, retention, manifest checks, the plan
of a restore, the rows of a dump); ``folders``, ``mariadb``, ``sqlite`` do the I/O of each
kind of part; ``engine`` puts them together; ``cli`` is the command.
"""
