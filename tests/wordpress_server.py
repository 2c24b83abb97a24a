"""A real, freshly installed WordPress (Debian's `wordpress` package) for tests, served by PHP's built-in server.

Each `LocalWordPress` gets its own MariaDB database and user, its own `wp-content` (uploads) in a temporary
directory and its own port, and removes all of them on `stop()`. Needs the Debian packages `wordpress php-cli
php-mysql` (and php-gd, php-curl, php-xml, php-mbstring for media) and MariaDB on 127.0.0.1:3306 with
`root` allowed over the socket (`mysql -uroot`). When any of that is missing the `wordpress` fixture skips,
saying what is missing, on a developer machine and fails when `PIPELINE_REQUIRE_WORDPRESS=1` (CI, `.ci/run`).

Why a tree of links instead of serving `/usr/share/wordpress` directly: Debian's `wp-config.php` only loads
`/etc/wordpress/config-<host>.php` (the host without its port, or `$_SERVER['WORDPRESS_CONFIG']`, which may
only name another file in `/etc/wordpress`), and answers 404 when there is none. Two instances on
127.0.0.1 would share one file, and tests would have to write to `/etc`. Instead each instance serves a
directory of symbolic links to `/usr/share/wordpress` with a `wp-config.php` of its own; a router script
defines `ABSPATH` as that directory, so `wp-load.php` (which PHP runs from its real path) loads this
instance's config and never Debian's.

In a test module::

    def test_something(wordpress: LocalWordPress) -> None:
        me = wordpress.rest("GET", "/wp/v2/users/me", params={"context": "edit"})
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import httpx2
import pytest

WORDPRESS_DIR = Path("/usr/share/wordpress")
MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306
READY_TIMEOUT_S = 30.0
INSTALL_HINT = (
    "install with `apt-get install --no-install-recommends wordpress php-cli php-mysql php-gd php-curl php-xml "
    "php-mbstring` and start MariaDB (see .ci/run)"
)
# Our own files in the instance's document root: everything else there links to WORDPRESS_DIR.
OWN_ENTRIES = {"wp-config.php", "wp-content", ".htaccess"}

WP_CONFIG = """<?php
// This instance's own config (Debian's would pick one by host name alone, shared by every port).
define('DB_NAME', '{database}');
define('DB_USER', '{db_user}');
define('DB_PASSWORD', '{db_password}');
define('DB_HOST', '{db_host}');
define('DB_CHARSET', 'utf8mb4');
define('WP_HOME', '{url}');
define('WP_SITEURL', '{url}');
define('WP_CONTENT_DIR', '{content_dir}');
define('WP_CONTENT_URL', '{url}/wp-content');
// Application passwords are refused over plain HTTP unless the environment is 'local'.
define('WP_ENVIRONMENT_TYPE', 'local');
// No cron spawned by requests (it would hit this server in the middle of a test), no self-updates.
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
$table_prefix = 'wp_';
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
"""

ROUTER = """<?php
// php -S runs this for every request. WordPress's entry points find wp-load.php by their real path (in
// /usr/share/wordpress), and wp-load.php then loads ABSPATH/wp-config.php: pointing ABSPATH at this
// instance's document root makes it load this instance's config.
define('ABSPATH', '{docroot}/');
if (isset($_GET['rest_route']) && file_exists('{pretty_only_flag}')) {{
    // Pretty-only mode: the site answers the REST API at /wp-json/ only, as many real sites are reached.
    http_response_code(404);
    header('Content-Type: application/json; charset=UTF-8');
    echo '{{"code":"rest_no_route","message":"rest_route= is disabled on this test site","data":{{"status":404}}}}';
    return true;
}}
$path = urldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? '/');
if ($path !== '/' && is_file(ABSPATH . ltrim($path, '/'))) {{
    return false;  // a script or a static file (uploads): the built-in server runs or sends it
}}
// Everything else (/, /wp-json/..., permalinks) is WordPress's front controller, as Apache's rewrite would do.
$_SERVER['SCRIPT_NAME'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = ABSPATH . 'index.php';
$_SERVER['PHP_SELF'] = '/index.php';
chdir(ABSPATH);
require ABSPATH . 'index.php';
"""

# WordPress calls out (update checks, the permalink probe during install, oEmbed); there is no internet here and
# a loopback call would wait on this server. Failing them at once keeps requests fast and deterministic.
OFFLINE_PLUGIN = """<?php
add_filter('pre_http_request', function () {
    return new WP_Error('http_request_blocked', 'Outgoing HTTP is disabled on this test site.');
}, 1);
// No mail either (install sends one; there is no sendmail): report it sent.
add_filter('pre_wp_mail', '__return_true');
"""

# Run with the php CLI against this instance's config; prints only what the caller reads.
WP_LOAD = """<?php
define('ABSPATH', '{docroot}/');
$_SERVER['HTTP_HOST'] = '{host}';
$_SERVER['REQUEST_URI'] = '/';
require ABSPATH . 'wp-load.php';
"""

CREATE_APP_PASSWORD = """
$user = get_user_by('login', '{username}');
// Pretty permalinks stay off after install (as on a fresh site): the REST API is at ?rest_route= until
// enable_pretty_permalinks().
update_option('permalink_structure', '');
[$password, $item] = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => 'tests']);
echo $password;
"""

ENABLE_PRETTY_PERMALINKS = """
update_option('permalink_structure', '/%postname%/');
flush_rewrite_rules(false);
echo get_option('permalink_structure');
"""


def wordpress_required() -> bool:
    """Whether a missing WordPress must fail the tests (CI) rather than skip them (a developer machine)."""
    return os.environ.get("PIPELINE_REQUIRE_WORDPRESS", "").lower() in {"1", "true", "yes"}


def _run(argv: list[str], stdin: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def _listening(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wordpress_available() -> str | None:
    """None when a `LocalWordPress` can run here, else why not (a missing binary, package or database)."""
    php = shutil.which("php")
    if php is None:
        return "no `php` binary on PATH (Debian package php-cli)"
    if not (WORDPRESS_DIR / "wp-settings.php").is_file():
        return f"no WordPress in {WORDPRESS_DIR} (Debian package wordpress)"
    missing = _run([php, "-r", 'foreach (["mysqli", "gd"] as $e) if (!extension_loaded($e)) echo "$e ";'])
    if missing.returncode != 0 or missing.stdout.strip():
        return f"PHP extensions missing: {missing.stdout.strip() or missing.stderr.strip()} (php-mysql, php-gd)"
    if shutil.which("mysql") is None:
        return "no `mysql` client on PATH (MariaDB client)"
    if not _listening(MARIADB_HOST, MARIADB_PORT):
        return f"MariaDB is not reachable on {MARIADB_HOST}:{MARIADB_PORT}"
    try:
        probe = _run(["mysql", "-uroot", "--batch", "-e", "SELECT 1"], timeout=10)
    except subprocess.TimeoutExpired:
        return "MariaDB did not answer `mysql -uroot` within 10 s"
    if probe.returncode != 0:
        return f"MariaDB refuses `mysql -uroot` over its socket: {probe.stderr.strip()}"
    return None


def unavailable(reason: str) -> NoReturn:
    """Skip (developer machine) or fail (`PIPELINE_REQUIRE_WORDPRESS=1`) because WordPress cannot run here."""
    if wordpress_required():
        pytest.fail(f"{reason}; PIPELINE_REQUIRE_WORDPRESS=1, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"real WordPress tests skipped: {reason}; {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WordPressError(RuntimeError):
    """A REST call answered with an error status; carries the status and the decoded body."""

    def __init__(self, method: str, route: str, status: int, body: Any):
        super().__init__(f"{method} {route} -> HTTP {status}: {body!r}"[:2000])
        self.status = status
        self.body = body


class LocalWordPress:
    """A freshly installed WordPress with its own database, content directory and port (see the module doc).

    `url` is the site (`http://127.0.0.1:PORT`), `username` the administrator and `password` an application
    password for it (basic auth on the REST API). Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(self, username: str = "admin", title: str = "Pipeline Test Site"):
        self.username = username
        self.title = title
        self.password = ""  # the application password, set by start(); never printed
        # Unique per instance, so parallel sessions (or a crashed earlier one) never collide.
        self.name = f"wpt_{os.getpid()}_{secrets.token_hex(4)}"
        self._db_password = secrets.token_hex(16)
        self._admin_password = secrets.token_hex(16)
        self.port = 0
        self.url = ""
        self.root: Path | None = None
        self.pretty_permalinks = False
        self._process: subprocess.Popen[bytes] | None = None
        self._database_created = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalWordPress:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalWordPress:
        """Create the database, files and server, run WordPress's installer and create the application password."""
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            self._create_database()
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._write_site()
            self.up()
            self._install()
            self.password = self._php(CREATE_APP_PASSWORD.format(username=self.username)).strip()
            if not self.password:
                raise RuntimeError("WordPress did not create an application password")
        except BaseException:
            self.stop()  # leave nothing behind when setup fails half-way
            raise
        return self

    def stop(self) -> None:
        """Stop the server and drop the database, its user and the temporary directory (safe to call twice)."""
        with contextlib.suppress(Exception):
            self.down()
        if self._database_created:
            self._sql(f"DROP DATABASE IF EXISTS `{self.name}`; DROP USER IF EXISTS '{self.name}'@'{MARIADB_HOST}';")
            self._database_created = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def down(self) -> None:
        """Stop the PHP server (requests then get connection refused); the database and files stay."""
        process, self._process = self._process, None
        if process is None:
            return
        # The server forks workers (PHP_CLI_SERVER_WORKERS) in its own session: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _listening("127.0.0.1", self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)  # forked workers may outlive the parent for a moment

    def up(self) -> None:
        """Start the PHP server on this instance's port (again, after `down()`): same database, same posts."""
        if self._process is not None:
            return
        assert self.root is not None, "start() first"
        php = shutil.which("php") or "php"
        env = {**os.environ, "PHP_CLI_SERVER_WORKERS": "4"}  # concurrent requests, as a real site takes
        deadline = time.monotonic() + READY_TIMEOUT_S
        with open(self.root / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [php, "-S", f"127.0.0.1:{self.port}", "-t", str(self.docroot), str(self.root / "router.php")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        while not _listening("127.0.0.1", self.port, timeout=0.2):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"php -S exited at start: {self.server_log()[-2000:]}")
            if time.monotonic() > deadline:
                self.down()
                raise RuntimeError(f"php -S did not listen on port {self.port} within {READY_TIMEOUT_S} s")
            time.sleep(0.05)

    # -- the REST API ------------------------------------------------------------------------------------

    def rest_url(self, route: str) -> str:
        """The URL of a REST route (`/wp/v2/posts`): `?rest_route=` by default, `/wp-json/` once pretty."""
        if self.pretty_permalinks:
            return f"{self.url}/wp-json{route}"
        return f"{self.url}/?rest_route={route}"

    def request(
        self, method: str, route: str, *, auth: tuple[str, str] | None = None, **kwargs: Any
    ) -> httpx2.Response:
        """One REST call as the administrator (or `auth`); `kwargs` go to `httpx2.request` (params, json, ...)."""
        kwargs.setdefault("timeout", 60.0)
        if self.pretty_permalinks:
            url = self.rest_url(route)
        else:
            # httpx replaces a URL's query with `params`: the route goes in with them.
            url = f"{self.url}/"
            kwargs["params"] = {"rest_route": route, **(kwargs.get("params") or {})}
        return httpx2.request(method, url, auth=auth or (self.username, self.password), **kwargs)

    def rest(self, method: str, route: str, **kwargs: Any) -> Any:
        """One REST call as the administrator, its JSON decoded; raises `WordPressError` on an error status."""
        response = self.request(method, route, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text[:2000]
        if response.status_code >= 400:
            raise WordPressError(method, route, response.status_code, body)
        return body

    def enable_pretty_permalinks(self, only: bool = True) -> None:
        """Turn on `/%postname%/` permalinks, so the REST API answers at `/wp-json/`.

        With `only`, `?rest_route=` requests are refused (404), as a client that assumed that base would be
        on a site reached through pretty URLs only.
        """
        assert self.root is not None, "start() first"
        self._php(ENABLE_PRETTY_PERMALINKS)
        self.pretty_permalinks = True
        if only:
            self._pretty_only_flag.touch()

    # -- internals ---------------------------------------------------------------------------------------

    @property
    def docroot(self) -> Path:
        """The served directory: links to WordPress's files, this instance's config and `wp-content`."""
        assert self.root is not None, "start() first"
        return self.root / "site"

    @property
    def content_dir(self) -> Path:
        """This instance's `WP_CONTENT_DIR` (uploads land in `uploads/` inside it)."""
        return self.docroot / "wp-content"

    @property
    def _pretty_only_flag(self) -> Path:
        assert self.root is not None
        return self.root / "pretty-only"

    def server_log(self) -> str:
        """What the PHP server printed (request lines and PHP errors; no credentials)."""
        if self.root is None or not (self.root / "server.log").exists():
            return ""
        return (self.root / "server.log").read_text(errors="replace")

    def _sql(self, statements: str) -> None:
        # The statements go on stdin, so passwords never appear in a process listing.
        result = _run(["mysql", "-uroot", "--batch"], stdin=statements)
        if result.returncode != 0:
            raise RuntimeError(f"mysql -uroot failed: {result.stderr.strip()}")

    def _create_database(self) -> None:
        self._database_created = True  # set first: stop() drops whatever part of it exists
        # WordPress connects over TCP to 127.0.0.1, which a user for 'localhost' alone may not use.
        self._sql(
            f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
            f" CREATE USER '{self.name}'@'{MARIADB_HOST}' IDENTIFIED BY '{self._db_password}';"
            f" GRANT ALL ON `{self.name}`.* TO '{self.name}'@'{MARIADB_HOST}';"
        )

    def _write_site(self) -> None:
        assert self.root is not None
        docroot = self.docroot
        docroot.mkdir()
        for entry in WORDPRESS_DIR.iterdir():
            if entry.name not in OWN_ENTRIES:
                (docroot / entry.name).symlink_to(entry)
        content = self.content_dir
        (content / "uploads").mkdir(parents=True)
        (content / "mu-plugins").mkdir()
        (content / "mu-plugins" / "offline.php").write_text(OFFLINE_PLUGIN)
        for shared in ("plugins", "themes"):
            (content / shared).symlink_to(WORDPRESS_DIR / "wp-content" / shared)
        (docroot / "wp-config.php").write_text(
            WP_CONFIG.format(
                database=self.name,
                db_user=self.name,
                db_password=self._db_password,
                db_host=MARIADB_HOST,
                url=self.url,
                content_dir=content,
            )
        )
        (self.root / "router.php").write_text(ROUTER.format(docroot=docroot, pretty_only_flag=self._pretty_only_flag))
        (self.root / "wp-load.php").write_text(WP_LOAD.format(docroot=docroot, host=f"127.0.0.1:{self.port}"))

    def _install(self) -> None:
        response = httpx2.post(
            f"{self.url}/wp-admin/install.php?step=2",
            data={
                "weblog_title": self.title,
                "user_name": self.username,
                "admin_password": self._admin_password,
                "admin_password2": self._admin_password,
                "pw_weak": "1",
                "admin_email": "admin@example.com",
                "blog_public": "0",
                "language": "",
            },
            timeout=120.0,
        )
        if response.status_code != 200 or "Success!" not in response.text:
            raise RuntimeError(
                f"WordPress install answered HTTP {response.status_code}: {response.text[:1500]}"
                f"\nserver log: {self.server_log()[-1500:]}"
            )

    def _php(self, code: str) -> str:
        """Run PHP code with WordPress loaded for this instance (CLI); returns what it printed."""
        assert self.root is not None
        script = self.root / f"cli-{secrets.token_hex(4)}.php"
        script.write_text((self.root / "wp-load.php").read_text() + code)
        try:
            result = _run([shutil.which("php") or "php", "-d", "display_errors=stderr", str(script)], timeout=60)
        finally:
            script.unlink()
        if result.returncode != 0:
            # stderr/stdout here are PHP errors; the password is only printed on success.
            raise RuntimeError(f"php failed ({result.returncode}): {result.stderr.strip()[:1500]}")
        return result.stdout


def running_wordpress() -> Iterator[LocalWordPress]:
    """The body of the `wordpress` fixture: skip or fail when WordPress cannot run, else one for the scope."""
    reason = wordpress_available()
    if reason is not None:
        unavailable(reason)
    with LocalWordPress() as site:
        yield site
