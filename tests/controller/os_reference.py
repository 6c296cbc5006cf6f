"""The real names and paths of every OS-specific thing the roles use, per OS (Debian 12,
Debian 13, EL 9), written down from the distributions' packaging, not from the roles.

The render tests (``test_os_renderings.py``) compare each role's variables, package list,
templates and unit files rendered with each OS's facts against this table, and look for a
Debian-only name in every EL rendering (``debian_only_tokens``, ``leaks``).

``REFERENCE[role][variable]`` is a ``Name``: the value the role's internal variable must have
on each OS, and where the EL 9 value comes from (``SOURCES``). EL packages name their
repository: BaseOS/AppStream (RHEL 9, rebuilt by Rocky and Alma), CRB, or EPEL 9.

Sources. EL 9 packages are built from CentOS Stream 9's dist-git (RHEL 9 content, the
``c9s`` branches of https://gitlab.com/redhat/centos-stream/rpms/) and EPEL 9 packages from
Fedora's dist-git (``epel9`` branches of https://src.fedoraproject.org/rpms/). Where a spec
was read for this table (through the public mirror of Fedora's spec files,
``r0x0d/fedora-rpm-specs``, ``specs/<name>.spec``), the entry says ``read``; the other EL
entries are the packaging's well-known layout, named with the dist-git file to check, and
are marked ``not re-read`` so that a reviewer knows which ones to confirm first.

Debian 12 values are the ones the lab runs (molecule ``default`` scenario, Debian 12
containers); Debian 13 values are the same package names and paths in trixie
(https://packages.debian.org/trixie/<package>), not yet run (molecule ``trixie`` will).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# Facts given to the renderings (what ``setup`` reports on each OS).
FACTS: dict[str, dict[str, str]] = {
    "debian12": {
        "os_family": "Debian",
        "distribution": "Debian",
        "distribution_major_version": "12",
        "distribution_release": "bookworm",
    },
    "debian13": {
        "os_family": "Debian",
        "distribution": "Debian",
        "distribution_major_version": "13",
        "distribution_release": "trixie",
    },
    "el9": {
        "os_family": "RedHat",
        "distribution": "Rocky",
        "distribution_major_version": "9",
        "distribution_release": "Blue Onyx",
    },
}
OSES = tuple(FACTS)
DEBIAN_OSES = ("debian12", "debian13")

_FEDORA = "https://src.fedoraproject.org/rpms/{0}/blob/epel9/f/{0}.spec"
_STREAM = "https://gitlab.com/redhat/centos-stream/rpms/{0}/-/blob/c9s/{0}.spec"
SOURCES: dict[str, str] = {
    "clamav": (
        "EPEL 9 clamav: " + _FEDORA.format("clamav") + " (read: r0x0d/fedora-rpm-specs "
        "specs/clamav.spec): subpackages clamd, clamav-freshclam (renamed from clamav-update "
        "in 1.0.1-4), clamav (clamdscan, clamconf in %{_bindir}); scan.conf in "
        "/etc/clamd.d with User clamscan; tmpfiles 'd /run/clamd.scan 0710 clamscan "
        "virusgroup', LocalSocket /run/clamd.scan/clamd.sock; clamd@.service "
        "(clamd@scan.service enabled in %post); /etc/freshclam.conf; database folder "
        "/var/lib/clamav owned by clamupdate (%attr(-,clamupdate,clamupdate)); "
        "clamav-freshclam.service"
    ),
    "clamav-freshclam-once": (
        "Debian 13 clamav-freshclam (1.4.x) ships clamav-freshclam-once.service (Type=oneshot, "
        "WantedBy=multi-user.target) and clamav-freshclam-once.timer, both enabled on install "
        "next to clamav-freshclam.service (seen: systemctl list-unit-files in the trixie "
        "scenario's containers); Debian 12's 1.0.x and EPEL 9's clamav-freshclam have only the "
        "daemon's unit (the spec above)"
    ),
    "nrpe": (
        "EPEL 9 nrpe: " + _FEDORA.format("nrpe") + " (read: r0x0d/fedora-rpm-specs "
        "specs/nrpe.spec): --with-nrpe-user=nrpe, nrpe.service, /etc/nagios/nrpe.cfg, "
        "'%dir /etc/nrpe.d' (patch 'Include etc/nrpe.d config directory'), plugins in "
        "%{_libdir}/nagios/plugins = /usr/lib64/nagios/plugins, check_nrpe in "
        "nagios-plugins-nrpe"
    ),
    "nagios-plugins": (
        "EPEL 9 nagios-plugins: " + _FEDORA.format("nagios-plugins") + " (not re-read): "
        "one subpackage per plugin (nagios-plugins-load, -disk, -procs) in "
        "/usr/lib64/nagios/plugins"
    ),
    "nagios": (
        "EPEL 9 nagios: " + _FEDORA.format("nagios") + " (not re-read): nagios.service, "
        "/usr/sbin/nagios, /etc/nagios/{nagios,cgi}.cfg, /etc/nagios/conf.d, "
        "/etc/httpd/conf.d/nagios.conf (CGIs /usr/lib64/nagios/cgi-bin, pages "
        "/usr/share/nagios/html, AuthUserFile /etc/nagios/passwd)"
    ),
    "httpd": (
        "RHEL 9 AppStream httpd, mod_ssl: " + _STREAM.format("httpd") + " (not re-read): "
        "httpd.service, /etc/httpd/conf.d/*.conf, apachectl, group apache; modules load "
        "from /etc/httpd/conf.modules.d (no a2enmod/a2enconf)"
    ),
    "spamassassin": (
        "RHEL 9 AppStream spamassassin: " + _STREAM.format("spamassassin") + " (read: "
        "r0x0d/fedora-rpm-specs specs/spamassassin.spec, same layout): "
        "spamassassin.service, configuration in /etc/mail/spamassassin, spamd in %{_bindir}"
        " = /usr/bin/spamd; no spamd user (Passerelle creates it)"
    ),
    "rsyslog": (
        "RHEL 9 BaseOS rsyslog: " + _STREAM.format("rsyslog") + " (its rsyslog.conf: "
        "'mail.* -/var/log/maillog'; seen in several EL rsyslog.conf copies in the code "
        "corpus)"
    ),
    "unbound": (
        "RHEL 9 AppStream unbound: " + _STREAM.format("unbound") + " (not re-read): "
        "unbound.conf has 'include: /etc/unbound/conf.d/*.conf' and "
        "'auto-trust-anchor-file: /var/lib/unbound/root.key' kept by unbound-anchor (no "
        "dns-root-data package on EL)"
    ),
    "sendmail": (
        "RHEL 9 AppStream sendmail, sendmail-cf: " + _STREAM.format("sendmail") + " (not "
        "re-read): /usr/sbin/sendmail.sendmail (alternatives), /usr/share/sendmail-cf, "
        "/etc/aliases, PID /run/sendmail.pid, user smmsp, OSTYPE(linux); "
        "policycoreutils-python-utils for the extra daemons' ports: see selinux-tools"
    ),
    "mariadb": (
        "RHEL 9 AppStream mariadb 10.5: " + _STREAM.format("mariadb") + " (not re-read): "
        "mariadb-server (/usr/libexec/mariadbd, mariadb.service, /etc/my.cnf.d), client "
        "package mariadb, socket /var/lib/mysql/mysql.sock"
    ),
    "python": (
        "python3-PyMySQL (AppStream, " + _STREAM.format("python-PyMySQL") + "), "
        "python3-jinja2 (AppStream, " + _STREAM.format("python-jinja2") + "), "
        "python3-ldap (AppStream, " + _STREAM.format("python-ldap") + "), "
        "python3-pymilter (EPEL, " + _FEDORA.format("python-pymilter") + "), "
        "python3-libarchive-c (EPEL, " + _FEDORA.format("python-libarchive-c") + "); not re-read"
    ),
    "perl": (
        "perl-DBD-MySQL (AppStream, " + _STREAM.format("perl-DBD-MySQL") + "), tesseract "
        "and tesseract-langpack-* (AppStream/EPEL, "
        + _FEDORA.format("tesseract-tessdata")
        + "); not re-read"
    ),
    "dmarc": (
        "SpamAssassin's DMARC plugin exists from 4.0 (Debian 12: 4.0.1, its v400.pre loads "
        "it; it needs Mail::DMARC, libmail-dmarc-perl, a Recommends). RHEL 9 AppStream ships "
        "3.4.6 (" + _STREAM.format("spamassassin") + "; EL 9 branched from Fedora 34, and "
        "Fedora's spec changelog, r0x0d/fedora-rpm-specs specs/spamassassin.spec, has "
        "3.4.6-1 in April 2021 and 4.0.0-1 only in December 2022): no DMARC plugin, so no "
        "Mail::DMARC package on EL 9"
    ),
    "spf": (
        "perl-Mail-SPF (Mail::SPF, which SpamAssassin's SPF plugin loads) is in EPEL 9: "
        + _FEDORA.format("perl-Mail-SPF")
        + " (not re-read; the same spec is in microsoft/azurelinux "
        "SPECS-EXTENDED/perl-Mail-SPF/perl-Mail-SPF.spec); Debian: libmail-spf-perl "
        "(https://packages.debian.org/bookworm/libmail-spf-perl)"
    ),
    "openldap": (
        "openldap-servers on EL 9 is in EPEL (RHEL 9 dropped it): "
        + _FEDORA.format("openldap-servers")
        + " (not re-read): user ldap, /etc/openldap/slapd.d, /etc/openldap/schema, PID "
        "/run/openldap/slapd.pid; clients in openldap-clients (BaseOS)"
    ),
    "selinux": (
        "RHEL 9 selinux-policy booleans (" + _STREAM.format("selinux-policy") + ", not "
        "re-read): antivirus_can_scan_system and antivirus_use_jit (module antivirus, "
        "recommended by EPEL's clamd README for clamd), nagios_run_sudo (module nagios: NRPE "
        "may run sudo); Debian has no SELinux by default (none)"
    ),
    "ca-certificates": (
        "RHEL 9 ca-certificates: " + _STREAM.format("ca-certificates") + " (not re-read): "
        "/etc/pki/tls/certs/ca-bundle.crt (link to the extracted tls-ca-bundle.pem) in "
        "/etc/pki/tls/certs; Debian's update-ca-certificates writes "
        "/etc/ssl/certs/ca-certificates.crt and the hashed /etc/ssl/certs"
    ),
    "opendkim": (
        "EPEL 9 opendkim: " + _FEDORA.format("opendkim") + " (read: r0x0d/fedora-rpm-specs "
        "specs/opendkim.spec): subpackages opendkim (/usr/sbin/opendkim, opendkim.service, "
        "/etc/opendkim.conf, '%dir %attr(0750,opendkim,opendkim) %{_rundir}/opendkim', "
        "/etc/opendkim/keys; user and group opendkim created in %pre) and opendkim-tools "
        "(opendkim-testkey, opendkim-testmsg, since 2.11.0-0.21). Debian 12: packages opendkim "
        "and opendkim-tools 2.11.0~beta2-8+deb12u1 (read: the .debs' opendkim.service, "
        "ExecReload=/bin/kill -USR1 $MAINPID; tmpfiles 'd /run/opendkim 0750 opendkim "
        "opendkim'; UserID opendkim)"
    ),
    "selinux-tools": (
        "RHEL 9 policycoreutils: " + _STREAM.format("policycoreutils") + " (read: "
        "r0x0d/fedora-rpm-specs specs/policycoreutils.spec, same layout): semodule, "
        "semodule_package, restorecon in policycoreutils itself; semanage in "
        "policycoreutils-python-utils, which requires python3-policycoreutils (seobject.py, "
        "what community.general.sefcontext and seport import; it requires checkpolicy). "
        "checkmodule is in checkpolicy: " + _STREAM.format("checkpolicy") + " (not re-read). "
        "Debian has no SELinux by default (none)"
    ),
    "selinux-policy": (
        "RHEL 9 selinux-policy (targeted), built from fedora-selinux/selinux-policy (read: "
        "policy/modules/contrib/sendmail.te, milter.te, milter.if, nagios.te; "
        "policy/modules/system/unconfinedservice.te, init.te; policy/modules/kernel/files.if, "
        "files.te, corenetwork.te.in)"
    ),
    "same": "the same name on Debian and EL (the upstream's own name)",
}

# The names of EL 9's SELinux policy that Passerelle's policy module
# (roles/passerelle_tools/files/passerelle.te) requires and its tasks use, with what each is
# (read in SOURCES["selinux-policy"]). test_selinux_policy.py checks that the module requires
# nothing else. Debian has no SELinux by default: none of these exist there.
SELINUX_POLICY: dict[str, str] = {
    "sendmail_t": "sendmail's domain (sendmail.te: mta_sendmail_mailserver(sendmail_t))",
    "unconfined_service_t": (
        "systemd services run from bin_t executables, such as the passerelle command "
        "(unconfinedservice.te: corecmd_bin_entry_type(unconfined_service_t))"
    ),
    "nrpe_t": "NRPE's domain (nagios.te), in which its sudo-run checks stay",
    "file_type": "every file type (files.if: files_type)",
    "non_security_file_type": "files_type's second attribute (files.if)",
    "non_auth_file_type": "files_type's third attribute (files.if)",
    "pidfile": (
        "runtime files in /run (files.if: files_pid_file); init.te lets systemd (init_t) "
        "create and relabel folders of this attribute (files_manage_all_pid_dirs, "
        "files_relabel_all_pid_dirs)"
    ),
    "milter_data_type": (
        "milters' socket folders and sockets (milter.if: milter_template); sendmail.te's "
        "milter_stream_connect_all(sendmail_t) lets sendmail search such folders and write "
        "such sockets"
    ),
    "smtp_port_t": (
        "the ports sendmail_t may bind (sendmail.te: corenet_tcp_bind_smtp_port); tcp 25, "
        "465, 587 (corenetwork.te.in: network_port(smtp, ...))"
    ),
    "inetd_child_port_t": (
        "the ports nrpe_t may bind (nagios.te: corenet_tcp_bind_inetd_child_port); tcp 5666 "
        "among them (corenetwork.te.in: network_port(inetd_child, ...))"
    ),
    "mysqld_port_t": (
        "the ports mysqld_t (MariaDB) binds; tcp 1186, 3306, 63132-63164 (corenetwork.te.in: "
        "network_port(mysqld, ...))"
    ),
    "spamd_port_t": (
        "the ports spamd_t binds; tcp 783, 10026, 10027 (corenetwork.te.in: "
        "network_port(spamd, ...))"
    ),
}


@dataclass(frozen=True)
class Name:
    """One OS-specific value: what it is on each OS, and where the EL 9 value comes from."""

    debian12: Any
    el9: Any
    source: str
    debian13: Any = None  # None: as on Debian 12

    def on(self, os_id: str) -> Any:
        if os_id == "debian13":
            return self.debian12 if self.debian13 is None else self.debian13
        return getattr(self, os_id)


def same(value: Any) -> Name:
    """A value that is the same on every OS (no leak to look for)."""
    return Name(value, value, "same")


# The sendmail, clamd, spamd... units the supervision watches, per daemon of the component
# table (filter_plugins/passerelle_components.py): unit, check_procs arguments.
_SUPERVISION_DEBIAN = {
    "plugins": "/usr/lib/nagios/plugins",
    "daemons": {
        "sendmail": {"unit": "sendmail.service", "procs": "-C sendmail -a MTA"},
        "spamd": {"unit": "spamd.service", "procs": "-a '/usr/sbin/spamd'"},
        "clamd": {"unit": "clamav-daemon.service", "procs": "-C clamd"},
        "freshclam": {"unit": "clamav-freshclam.service", "procs": "-C freshclam"},
        "mariadb": {"unit": "mariadb.service", "procs": "-C mariadbd"},
        "slapd": {"unit": "slapd.service", "procs": "-C slapd"},
        "nagios": {"unit": "nagios4.service", "procs": "-C nagios4"},
        "apache2": {"unit": "apache2.service", "procs": "-C apache2"},
    },
}
_SUPERVISION_EL = {
    "plugins": "/usr/lib64/nagios/plugins",
    "daemons": {
        # ExecStart is /usr/sbin/sendmail.sendmail: its process name is not "sendmail", so
        # the daemon is found by its title ("sendmail: MTA: accepting connections").
        "sendmail": {"unit": "sendmail.service", "procs": "-a 'MTA: accepting'"},
        "spamd": {"unit": "spamassassin.service", "procs": "-a '/usr/bin/spamd'"},
        "clamd": {"unit": "clamd@scan.service", "procs": "-C clamd"},
        "freshclam": {"unit": "clamav-freshclam.service", "procs": "-C freshclam"},
        "mariadb": {"unit": "mariadb.service", "procs": "-C mariadbd"},
        "slapd": {"unit": "slapd.service", "procs": "-C slapd"},
        "nagios": {"unit": "nagios.service", "procs": "-C nagios"},
        "apache2": {"name": "httpd", "unit": "httpd.service", "procs": "-C httpd"},
    },
}

REFERENCE: dict[str, dict[str, Name]] = {
    "antivirus": {
        "__antivirus_packages": Name(
            ["python3-milter", "python3-libarchive-c"],
            ["python3-pymilter", "python3-libarchive-c"],
            "python",
        ),
        "__antivirus_clamd_socket": Name(
            "/run/clamav/clamd.ctl", "/run/clamd.scan/clamd.sock", "clamav"
        ),
        # the group that reaches clamd's socket: /run/clamd.scan is 0710 clamscan:virusgroup
        "__antivirus_clamav_group": Name("clamav", "virusgroup", "clamav"),
        "__antivirus_clamd_service": Name("clamav-daemon.service", "clamd@scan.service", "clamav"),
        "__antivirus_signature_dir": same("/var/lib/clamav"),
        "__antivirus_sendmail_service": same("sendmail.service"),
    },
    "clamav": {
        "__clamav_packages": Name(
            ["clamav-daemon", "clamav-freshclam", "clamdscan"],
            ["clamd", "clamav-freshclam", "clamav"],
            "clamav",
        ),
        "__clamav_clamd_conf": Name("/etc/clamav/clamd.conf", "/etc/clamd.d/scan.conf", "clamav"),
        "__clamav_freshclam_conf": Name(
            "/etc/clamav/freshclam.conf", "/etc/freshclam.conf", "clamav"
        ),
        "__clamav_clamd_service": Name("clamav-daemon", "clamd@scan", "clamav"),
        "__clamav_clamd_socket_unit": Name("clamav-daemon.socket", "", "clamav"),
        "__clamav_freshclam_service": same("clamav-freshclam"),
        "__clamav_freshclam_other_units": Name(
            [],
            [],
            "clamav-freshclam-once",
            ["clamav-freshclam-once.timer", "clamav-freshclam-once.service"],
        ),
        "__clamav_user": Name("clamav", "clamscan", "clamav"),
        "__clamav_group": Name("clamav", "virusgroup", "clamav"),
        "__clamav_db_owner": Name("clamav", "clamupdate", "clamav"),
        "__clamav_socket": Name("/run/clamav/clamd.ctl", "/run/clamd.scan/clamd.sock", "clamav"),
        "__clamav_pid_dir": Name("/run/clamav", "/run/clamd.scan", "clamav"),
        "__clamav_db_dir": same("/var/lib/clamav"),
        "__clamav_clamconf": same("/usr/bin/clamconf"),
        "__clamav_dropin_dir": Name(
            "/etc/systemd/system/clamav-daemon.service.d",
            "/etc/systemd/system/clamd@scan.service.d",
            "clamav",
        ),
        "__clamav_selinux_booleans": Name(
            [], ["antivirus_can_scan_system", "antivirus_use_jit"], "selinux"
        ),
        "__clamav_socket_dropin_dir": Name(
            "/etc/systemd/system/clamav-daemon.socket.d", "", "clamav"
        ),
    },
    "console": {
        "__console_server_packages": Name(
            ["python3-jinja2", "python3-pymysql"], ["python3-jinja2", "python3-PyMySQL"], "python"
        ),
        "__console_gateway_packages": Name(["python3-pymysql"], ["python3-PyMySQL"], "python"),
        "__console_ldap_packages": same(["python3-ldap"]),
        "__console_apache_site_includes": Name(
            "/etc/apache2/passerelle-site.d", "/etc/httpd/passerelle-site.d", "httpd"
        ),
        "__console_apache_service": Name("apache2", "httpd", "httpd"),
        "__console_apache_check": Name(["apache2ctl", "-t"], ["apachectl", "-t"], "httpd"),
        # EL: mod_proxy and mod_proxy_http load from conf.modules.d/00-proxy.conf.
        "__console_apache_modules": Name(["proxy", "proxy_http", "headers"], [], "httpd"),
        "__console_mail_log": Name("/var/log/mail.log", "/var/log/maillog", "rsyslog"),
    },
    "connwatch": {
        "__connwatch_packages": same(["rsyslog"]),
        "__connwatch_rsyslog_service": same("rsyslog"),
        "__connwatch_makemap": same("/usr/sbin/makemap"),
        "__connwatch_sendmail_service": same("sendmail"),
        "__connwatch_mail_log": Name("/var/log/mail.log", "/var/log/maillog", "rsyslog"),
    },
    "greylist": {
        "__greylist_packages": Name(
            ["python3-milter", "python3-pymysql"], ["python3-pymilter", "python3-PyMySQL"], "python"
        ),
    },
    "mariadb": {
        "__mariadb_packages": Name(
            ["mariadb-server", "mariadb-client", "python3-pymysql"],
            ["mariadb-server", "mariadb", "python3-PyMySQL"],
            "mariadb",
        ),
        "__mariadb_service": same("mariadb"),
        "__mariadb_daemon": Name("/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "mariadb"),
        "__mariadb_config_file": Name(
            "/etc/mysql/mariadb.conf.d/60-passerelle.cnf",
            "/etc/my.cnf.d/60-passerelle.cnf",
            "mariadb",
        ),
        "__mariadb_socket": Name("/run/mysqld/mysqld.sock", "/var/lib/mysql/mysql.sock", "mariadb"),
    },
    "nagios": {
        "__nagios_packages": Name(
            ["nagios4", "nagios-nrpe-plugin", "monitoring-plugins-basic", "apache2", "openssl"],
            ["nagios", "nagios-plugins-nrpe", "nagios-plugins-load", "httpd", "mod_ssl", "openssl"],
            "nagios",
        ),
        "__nagios_service": Name("nagios4", "nagios", "nagios"),
        "__nagios_binary": Name("/usr/sbin/nagios4", "/usr/sbin/nagios", "nagios"),
        "__nagios_etc": Name("/etc/nagios4", "/etc/nagios", "nagios"),
        "__nagios_main_cfg": Name("/etc/nagios4/nagios.cfg", "/etc/nagios/nagios.cfg", "nagios"),
        "__nagios_cgi_cfg": Name("/etc/nagios4/cgi.cfg", "/etc/nagios/cgi.cfg", "nagios"),
        "__nagios_objects": Name(
            "/etc/nagios4/conf.d/passerelle.cfg", "/etc/nagios/conf.d/passerelle.cfg", "nagios"
        ),
        "__nagios_htpasswd": Name("/etc/nagios4/htpasswd.users", "/etc/nagios/passwd", "nagios"),
        "__nagios_web_name": Name("nagios4", "nagios", "nagios"),
        "__nagios_cgi_dir": Name("/usr/lib/cgi-bin/nagios4", "/usr/lib64/nagios/cgi-bin", "nagios"),
        "__nagios_htdocs": Name("/usr/share/nagios4/htdocs", "/usr/share/nagios/html", "nagios"),
        "__nagios_stylesheets": Name(
            "/etc/nagios4/stylesheets", "/usr/share/nagios/html/stylesheets", "nagios"
        ),
        "__nagios_apache_service": Name("apache2", "httpd", "httpd"),
        "__nagios_apache_conf": Name(
            "/etc/apache2/conf-available/nagios4-cgi.conf",
            "/etc/httpd/conf.d/nagios.conf",
            "nagios",
        ),
        "__nagios_apache_conf_enabled": Name(
            "/etc/apache2/conf-enabled/nagios4-cgi.conf", "", "httpd"
        ),
        "__nagios_apache_modules": Name(
            ["cgi", "auth_basic", "authn_file", "authz_user", "rewrite", "ssl", "headers"],
            [],
            "httpd",
        ),
        "__nagios_apache_site": Name(
            "/etc/apache2/sites-available/passerelle-nagios.conf",
            "/etc/httpd/conf.d/passerelle-nagios-site.conf",
            "httpd",
        ),
        "__nagios_apache_site_link": Name(
            "/etc/apache2/sites-enabled/passerelle-nagios.conf", "", "httpd"
        ),
        "__nagios_apache_default_site": Name(
            "/etc/apache2/sites-enabled/000-default.conf", "", "httpd"
        ),
        "__nagios_apache_check": Name(["apache2ctl", "-t"], ["apachectl", "-t"], "httpd"),
        "__nagios_apache_site_includes": Name(
            "/etc/apache2/passerelle-site.d", "/etc/httpd/passerelle-site.d", "httpd"
        ),
        "__nagios_tls_dir": Name(
            "/etc/ssl/passerelle-nagios", "/etc/pki/tls/passerelle-nagios", "httpd"
        ),
        "__nagios_plugins": Name("/usr/lib/nagios/plugins", "/usr/lib64/nagios/plugins", "nrpe"),
        "__nagios_group": same("nagios"),
        "__nagios_web_group": Name("www-data", "apache", "httpd"),
    },
    "nrpe": {
        "__nrpe_packages": Name(
            ["nagios-nrpe-server", "monitoring-plugins-basic", "sudo"],
            ["nrpe", "nagios-plugins-load", "nagios-plugins-disk", "nagios-plugins-procs", "sudo"],
            "nagios-plugins",
        ),
        "__nrpe_service": Name("nagios-nrpe-server", "nrpe", "nrpe"),
        "__nrpe_user": Name("nagios", "nrpe", "nrpe"),
        "__nrpe_config": Name(
            "/etc/nagios/nrpe.d/passerelle.cfg", "/etc/nrpe.d/passerelle.cfg", "nrpe"
        ),
        "__nrpe_supervision": Name(_SUPERVISION_DEBIAN, _SUPERVISION_EL, "nrpe"),
        "__nrpe_selinux_booleans": Name([], ["nagios_run_sudo"], "selinux"),
    },
    "ops_reports": {
        "__ops_reports_packages": same(["rsyslog"]),
        "__ops_reports_rsyslog_service": same("rsyslog"),
        "__ops_reports_mail_log": Name("/var/log/mail.log", "/var/log/maillog", "rsyslog"),
        "__ops_reports_os_units": Name(
            [
                "sendmail",
                "passerelle-greylist",
                "passerelle-antivirus",
                "passerelle-spam",
                "spamd",
                "clamav-daemon",
                "clamav-freshclam",
                "mariadb",
            ],
            [
                "sendmail",
                "passerelle-greylist",
                "passerelle-antivirus",
                "passerelle-spam",
                "spamassassin",
                "clamd@scan",
                "clamav-freshclam",
                "mariadb",
            ],
            "clamav",
        ),
    },
    "resolver": {
        "__resolver_packages": Name(["unbound", "dns-root-data"], ["unbound"], "unbound"),
        "__resolver_service": same("unbound"),
        "__resolver_config": Name(
            "/etc/unbound/unbound.conf.d/passerelle.conf",
            "/etc/unbound/conf.d/passerelle.conf",
            "unbound",
        ),
    },
    "sendmail": {
        "__sendmail_packages": Name(
            ["sendmail-bin", "sendmail-cf", "m4", "make"],
            ["sendmail", "sendmail-cf", "m4", "make", "policycoreutils-python-utils"],
            "sendmail",
        ),
        "__sendmail_cf_dir": Name("/usr/share/sendmail/cf", "/usr/share/sendmail-cf", "sendmail"),
        "__sendmail_ostype": Name("debian", "linux", "sendmail"),
        "__sendmail_service": same("sendmail"),
        "__sendmail_pid_file": Name(
            "/run/sendmail/mta/sendmail.pid", "/run/sendmail.pid", "sendmail"
        ),
        "__sendmail_run_dir": Name("/run/sendmail/mta", "/run/sendmail", "sendmail"),
        "__sendmail_makemap": same("/usr/sbin/makemap"),
        "__sendmail_binary": Name("/usr/sbin/sendmail", "/usr/sbin/sendmail.sendmail", "sendmail"),
        "__sendmail_group": same("smmsp"),
        "__sendmail_aliases_file": Name("/etc/mail/aliases", "/etc/aliases", "sendmail"),
        "__sendmail_domain_m4": Name("debian-mta", "", "sendmail"),
        "__sendmail_gateway_packages": same(["python3-ldap"]),
        "__sendmail_tls_os_ca_file": Name(
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "ca-certificates",
        ),
        "__sendmail_tls_os_ca_path": Name(
            "/etc/ssl/certs", "/etc/pki/tls/certs", "ca-certificates"
        ),
    },
    "slapd": {
        "__slapd_packages": Name(
            ["slapd", "ldap-utils", "python3-ldap"],
            ["openldap-servers", "openldap-clients", "python3-ldap"],
            "openldap",
        ),
        "__slapd_user": Name("openldap", "ldap", "openldap"),
        "__slapd_group": Name("openldap", "ldap", "openldap"),
        "__slapd_config_dir": Name("/etc/ldap/slapd.d", "/etc/openldap/slapd.d", "openldap"),
        "__slapd_schema_dir": Name("/etc/ldap/schema", "/etc/openldap/schema", "openldap"),
        "__slapd_pid_file": Name("/run/slapd/slapd.pid", "/run/openldap/slapd.pid", "openldap"),
    },
    "spam_milter": {
        # The units the milter starts after: on Debian, spamd's and the name it had before
        # Debian 11 (kept so that the Debian unit did not change).
        "__spam_milter_spamd_units": Name(
            ["spamd.service", "spamassassin.service"], ["spamassassin.service"], "spamassassin"
        ),
        "__spam_milter_packages": Name(["python3-milter"], ["python3-pymilter"], "python"),
        "__spam_milter_bayes_user": Name("debian-spamd", "spamd", "spamassassin"),
    },
    "spamassassin": {
        "__spamassassin_packages": Name(
            ["spamassassin", "spamd"], ["spamassassin"], "spamassassin"
        ),
        "__spamassassin_sql_packages": Name(
            ["libdbd-mysql-perl", "mariadb-client"], ["perl-DBD-MySQL", "mariadb"], "perl"
        ),
        "__spamassassin_network_packages": Name(["libmail-spf-perl"], ["perl-Mail-SPF"], "spf"),
        "__spamassassin_dmarc_packages": Name(["libmail-dmarc-perl"], [], "dmarc"),
        "__spamassassin_public_suffix_list": same("/usr/share/publicsuffix/public_suffix_list.dat"),
        "__spamassassin_ocr_base_packages": Name(["tesseract-ocr"], ["tesseract"], "perl"),
        "__spamassassin_ocr_lang_prefix": Name("tesseract-ocr-", "tesseract-langpack-", "perl"),
        "__spamassassin_service": Name("spamd", "spamassassin", "spamassassin"),
        "__spamassassin_spamd": Name("/usr/sbin/spamd", "/usr/bin/spamd", "spamassassin"),
        "__spamassassin_user": Name("debian-spamd", "spamd", "spamassassin"),
        "__spamassassin_group": Name("debian-spamd", "spamd", "spamassassin"),
        "__spamassassin_home": same("/var/lib/spamassassin"),
        "__spamassassin_config_dir": Name(
            "/etc/spamassassin", "/etc/mail/spamassassin", "spamassassin"
        ),
    },
    "dkim_signer": {
        "__dkim_signer_packages": Name(
            ["opendkim", "opendkim-tools"], ["opendkim", "opendkim-tools"], "opendkim"
        ),
        "__dkim_signer_service": Name("opendkim", "opendkim", "opendkim"),
        "__dkim_signer_user": Name("opendkim", "opendkim", "opendkim"),
        "__dkim_signer_group": Name("opendkim", "opendkim", "opendkim"),
    },
    "passerelle_tools": {
        "__passerelle_tools_packages": Name(
            [], ["checkpolicy", "policycoreutils-python-utils"], "selinux-tools"
        ),
        "__passerelle_tools_sendmail_user": same("smmsp"),
        "__passerelle_tools_python": same("/usr/bin/python3"),
    },
}

# Roles that have an OS-specific variable: each must load vars/Debian.yml and vars/RedHat.yml.
OS_ROLES = tuple(
    sorted(r for r, names in REFERENCE.items() if any(n.source != "same" for n in names.values()))
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


# Values that are also ordinary words or the other family's names, so not looked for:
# apache's module names (mod_ssl is upstream's name too; EL loads the same modules from
# conf.modules.d), "clamd" and "slapd" (the daemons' names on both, EL's package names),
# "ldap" (EL's slapd user, a word of every LDAP setting), /usr/sbin/sendmail (EL's
# alternatives link, what the milters call to re-inject).
_NOT_TOKENS = {
    "cgi", "ssl", "headers", "rewrite", "auth_basic", "authn_file", "authz_user", "mod_ssl",
    "clamd", "slapd", "ldap", "/usr/sbin/sendmail",
}  # fmt: skip


def debian_only_tokens(reference: dict[str, dict[str, Name]] = REFERENCE) -> set[str]:
    """Every Debian value of the table that no EL value uses: none may appear in an EL rendering."""
    el: set[str] = set()
    debian: set[str] = set()
    for names in reference.values():
        for name in names.values():
            el.update(_strings(name.el9))
            for os_id in DEBIAN_OSES:
                debian.update(_strings(name.on(os_id)))
    # A folder of one family that holds the other's (EL's /run/sendmail, Debian's
    # /run/sendmail/mta) is not looked for in the other's renderings.
    return {
        t
        for t in debian - el
        if t not in _NOT_TOKENS and len(t) > 2 and not any(e.startswith(t + "/") for e in el)
    }


def leaks(text: str, tokens: Iterable[str]) -> list[str]:
    """The Debian-only tokens found in ``text`` as whole names (not inside a longer name or
    path: ``/usr/lib/nagios/plugins`` does not match ``/usr/lib64/nagios/plugins``)."""
    found = []
    for token in sorted(tokens):
        if re.search(rf"(?<![\w./@-]){re.escape(token)}(?![\w@-]|\.\w)", text):
            found.append(token)
    return found
