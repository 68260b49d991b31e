"""The shipped server configuration loads: `nginx -t` on conf/nginx/habitbot.conf, and logrotate
reads conf/logrotate/habitbot without an error.

The file is included inside http {} as Debian's nginx.conf includes sites-enabled/*. The test
writes a minimal nginx.conf in a temporary prefix (its own pid, error log and temp paths), points
the certificate and log paths of a copy of the file there, with a self-signed pair made by
openssl, and asks nginx to check it: no root paths, nothing started, nothing listening.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "conf" / "nginx" / "habitbot.conf"
LOGROTATE = ROOT / "conf" / "logrotate" / "habitbot"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
CERTIFICATE = re.compile(r"^(\s*ssl_certificate(?:_key)?\s+)(\S+);", re.MULTILINE)
LOG_PATH = re.compile(r"/var/log/nginx/")


def _tool(name: str, *candidates: str) -> str:
    """The executable, or a skip outside CI and a failure in CI (where it must be installed)."""
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found:
        return found
    message = f"{name} is not installed (Debian package {name}; `make test` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def nginx() -> str:
    return _tool("nginx", *NGINX_CANDIDATES)


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    openssl = _tool("openssl", "/usr/bin/openssl")
    for folder in ("tls", "log", "temp"):
        (tmp_path / folder).mkdir()
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=bot.example.com", "-keyout", str(tmp_path / "tls" / "privkey.pem"),
         "-out", str(tmp_path / "tls" / "fullchain.pem")],
        check=True, capture_output=True, timeout=60)
    return tmp_path


def _localized(text: str, prefix: Path) -> str:
    """The site file with its certificates and logs moved under `prefix`."""
    certificates = CERTIFICATE.findall(text)
    assert [directive.strip() for directive, _ in certificates] == [
        "ssl_certificate", "ssl_certificate_key"], "expected one certificate and one key"
    text = CERTIFICATE.sub(
        lambda m: f"{m.group(1)}{prefix / 'tls' / Path(m.group(2)).name};", text)
    assert LOG_PATH.search(text), "expected the access log under /var/log/nginx/"
    return LOG_PATH.sub(f"{prefix / 'log'}/", text)


def _check(nginx: str, prefix: Path, site: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` with the site included in http {}, as sites-enabled/* is on Debian."""
    (prefix / "habitbot.conf").write_text(_localized(site, prefix))
    temp = prefix / "temp"
    (prefix / "nginx.conf").write_text(f"""
pid {prefix / 'nginx.pid'};
error_log {prefix / 'log' / 'error.log'};
events {{}}
http {{
    client_body_temp_path {temp / 'body'};
    proxy_temp_path {temp / 'proxy'};
    fastcgi_temp_path {temp / 'fastcgi'};
    uwsgi_temp_path {temp / 'uwsgi'};
    scgi_temp_path {temp / 'scgi'};
    access_log {prefix / 'log' / 'access.log'};
    include {prefix / 'habitbot.conf'};
}}
""")
    return subprocess.run(
        [nginx, "-t", "-q", "-p", f"{prefix}/", "-e", str(prefix / "log" / "error.log"),
         "-c", str(prefix / "nginx.conf")],
        capture_output=True, text=True, timeout=60)


def test_shipped_nginx_config_loads_inside_http(nginx, prefix):
    result = _check(nginx, prefix, SHIPPED.read_text())
    assert result.returncode == 0, result.stderr


def test_the_check_refuses_log_format_inside_server(nginx, prefix):
    # the defect this guards against: a directive nginx only allows in http {}
    site = SHIPPED.read_text().replace(
        "server {\n", "server {\n    log_format again '$remote_addr';\n", 1)
    result = _check(nginx, prefix, site)
    assert result.returncode != 0
    assert '"log_format" directive is not allowed here' in result.stderr


def _logrotate_errors(config: Path, state: Path) -> list[str]:
    """logrotate's complaints about `config` (it exits 0 in debug mode even on a bad line)."""
    logrotate = _tool("logrotate", "/usr/sbin/logrotate")
    result = subprocess.run([logrotate, "--debug", "--state", str(state), str(config)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if line.startswith("error:")] or (
        [f"exit {result.returncode}"] if result.returncode else [])


def test_shipped_logrotate_config_reads_without_an_error(tmp_path):
    assert _logrotate_errors(LOGROTATE, tmp_path / "state") == []


def test_the_logrotate_check_notices_an_unknown_option(tmp_path):
    bad = tmp_path / "habitbot"
    bad.write_text(LOGROTATE.read_text().replace("    daily\n", "    dayly\n", 1))
    assert any("dayly" in error for error in _logrotate_errors(bad, tmp_path / "state"))
