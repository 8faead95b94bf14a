import contextlib
import os

import pytest

# Progress bars off in tests: their output is noise in pytest logs.
os.environ.setdefault("SPECROLL_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _registries_restored():
    """Every registry as it was before the test: a toy family one test registers never changes what
    another test's loop over the registry covers."""
    from specroll.core.results import _KINDS
    from specroll.policies import DRAFTERS, POLICIES

    kinds = dict(_KINDS)
    with contextlib.ExitStack() as stack:
        for reg in (POLICIES, DRAFTERS):
            stack.enter_context(reg.restored())
        yield
    _KINDS.clear()
    _KINDS.update(kinds)


# --- a real PostgreSQL server for the tuner's storage tests -----------------------------------------
# Started on first use (only tests that ask for `postgres_url` pay for it), on a free port of
# 127.0.0.1, with its data in a temporary folder, and stopped at the end of the session. The server
# is Debian's `postgresql` package (`make test` installs it); tests skip, naming the package, only
# where its binaries are absent.

import getpass  # noqa: E402
import glob  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

PG_USER, PG_PASSWORD, PG_DB = "specroll", "tune-secret", "specroll"


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A local TCP port nothing listens on (an unreachable server)."""
    return free_port()


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql://USER:PASSWORD@127.0.0.1:PORT/DB of a server this session starts (and stops)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's 'postgresql' "
                    "package (make test does)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is missing: pip install "
                                          "'psycopg[binary]' (make setup does)")
    # PostgreSQL refuses to run as root: run it as the package's own user then.
    user = "postgres" if os.geteuid() == 0 else getpass.getuser()
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam(user)
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as: install Debian's "
                        "'postgresql' package (it creates the user)")
    root = tempfile.mkdtemp(prefix="specroll-pg-")
    if os.geteuid() == 0:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    run = {"user": user} if os.geteuid() == 0 else {}
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as fh:
        fh.write(PG_PASSWORD)
    if os.geteuid() == 0:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    data, port = os.path.join(root, "data"), free_port()
    subprocess.run([initdb, "-D", data, "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                    "--no-locale", "-E", "UTF8"], check=True, capture_output=True, **run)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    log = os.path.join(root, "log")
    subprocess.run([pg_ctl, "-D", data, "-o", opts, "-l", log, "-w", "-t", "60", "start"], check=True,
                   capture_output=True, **run)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, password=PG_PASSWORD,
                             dbname="postgres", autocommit=True) as con:
            con.execute(f"CREATE DATABASE {PG_DB}")
        yield f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DB}"
    finally:
        subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, **run)
        shutil.rmtree(root, ignore_errors=True)
