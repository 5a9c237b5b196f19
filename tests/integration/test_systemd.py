"""The systemd units: `finishline service install` writes the shipped template with only its
placeholders filled in, the units have no ordering cycle and document themselves with something
that exists, both pass `systemd-analyze verify` and both rate under 5.0 in
`systemd-analyze security` (offline: no running systemd needed). docs/systemd.md explains."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from daemon.runtime.config import load_config
from tests.helpers import BIN, finishline

REPO = Path(__file__).resolve().parents[2]
USER_TEMPLATE = REPO / "systemd" / "finishline.service"
SYSTEM_TEMPLATE = REPO / "systemd" / "finishline@.service"
DOCS = REPO / "docs" / "systemd.md"
OPT = "/opt/finishline"  # where the system template expects the checkout
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 5.0


def _offline_supported() -> bool:
    if ANALYZE is None:
        return False
    res = subprocess.run([ANALYZE, "--help"], capture_output=True, text=True, check=False)
    return "--offline" in res.stdout


needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
needs_offline = pytest.mark.skipif(
    not _offline_supported(), reason="systemd-analyze lacks --offline (systemd 250 or later)"
)


def settings(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` for every setting of a unit file, in order (keys repeat)."""
    section, out = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


def values(text: str, section: str, key: str) -> list[str]:
    return [w for s, k, v in settings(text) if (s, k) == (section, key) for w in v.split()]


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Path]:
    """A throw-away home with its XDG folders, and a daemon config whose root is inside it."""
    places = {
        "HOME": tmp_path / "home",
        "XDG_CONFIG_HOME": tmp_path / "home" / ".config",
        "XDG_CACHE_HOME": tmp_path / "home" / ".cache",
        "XDG_DATA_HOME": tmp_path / "home" / ".local" / "share",
        "XDG_RUNTIME_DIR": tmp_path / "run",
    }
    for folder in places.values():
        folder.mkdir(parents=True)
    return places


def install(home: dict[str, Path], config: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "FINISHLINE_MODELS"}
    env.update({k: str(v) for k, v in home.items()})
    res = finishline("service", "install", "--no-enable", "--config", str(config), env=env)
    assert res.returncode == 0, res.stderr
    unit = home["XDG_CONFIG_HOME"] / "systemd" / "user" / "finishline.service"
    assert res.stdout.strip() == str(unit)
    return unit


@pytest.fixture
def installed(home: dict[str, Path], tmp_path: Path) -> Path:
    config = tmp_path / "daemon.toml"
    config.write_text(f'root = "{tmp_path / "root"}"\n')
    return install(home, config)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """The system template as an instance, pointing at a command that exists here."""
    unit = tmp_path / "finishline@studio.service"
    text = SYSTEM_TEMPLATE.read_text()
    unit.write_text(text.replace(f"{OPT}/.venv/bin/finishline", "/bin/true"))
    return unit


def test_install_writes_the_template_with_only_the_placeholders_filled(
    installed: Path, home: dict[str, Path], tmp_path: Path
) -> None:
    filled = {
        "FINISHLINE": str(BIN / "finishline"),
        "CONFIG": str(tmp_path / "daemon.toml"),
        "ROOT": str(tmp_path / "root"),
        "CACHE": str(home["XDG_CACHE_HOME"]),
        "MODELS": str(home["XDG_DATA_HOME"] / "finishline" / "models"),
        "DOCS": DOCS.resolve().as_uri(),
    }
    expected = USER_TEMPLATE.read_text()
    for name, value in filled.items():
        assert f"@{name}@" in expected
        expected = expected.replace(f"@{name}@", value)
    assert installed.read_text() == expected
    # the unit's ReadWritePaths must exist, or systemd refuses to start it
    for name in ("ROOT", "CACHE", "MODELS"):
        assert Path(filled[name]).is_dir()


def test_paths_with_spaces_and_percent_signs_are_quoted(home: dict[str, Path], tmp_path: Path):
    root = tmp_path / "my videos" / "50% done"
    config = tmp_path / "daemon.toml"
    config.write_text(f'root = "{root}"\n')
    text = install(home, config).read_text()
    assert f'ReadWritePaths="{str(root).replace("%", "%%")}" ' in text
    assert root.is_dir()


def test_a_relative_root_is_refused(home: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text('root = "videos"\n')
    env = {**os.environ, **{k: str(v) for k, v in home.items()}}
    res = finishline("service", "install", "--no-enable", "--config", str(config), env=env)
    assert res.returncode != 0
    assert "is relative; the service needs an absolute path" in res.stderr


def test_user_unit_has_no_ordering_cycle_with_its_install_target() -> None:
    text = USER_TEMPLATE.read_text()
    assert values(text, "Install", "WantedBy") == ["default.target"]
    for key in ("After", "Before", "Requires", "Wants", "BindsTo", "PartOf"):
        assert "default.target" not in values(text, "Unit", key), key


def _documentation_exists(uri: str) -> bool:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https", "man", "info"):
        return True
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if path.startswith(OPT + "/"):  # the system template names the checkout in /opt
            path = str(REPO / path.removeprefix(OPT + "/"))
        return Path(path).exists()
    return False


def test_documentation_points_at_something_that_exists(installed: Path) -> None:
    for unit in (installed, SYSTEM_TEMPLATE):
        docs = values(unit.read_text(), "Unit", "Documentation")
        assert docs, unit
        for uri in docs:
            assert _documentation_exists(uri), f"{unit.name}: {uri}"
        assert any(uri.endswith("/docs/systemd.md") for uri in docs), unit.name


def test_system_template_needs_nothing_outside_its_state_directory() -> None:
    text = SYSTEM_TEMPLATE.read_text()
    assert values(text, "Service", "StateDirectory") == ["finishline/%i"]
    assert values(text, "Service", "Environment") == ["HOME=%S/finishline/%i"]
    exec_start = values(text, "Service", "ExecStart")
    assert exec_start[1:] == ["daemon"]  # no --config: the default lands in the writable home
    assert not values(text, "Service", "ReadWritePaths")  # no /srv/... that must pre-exist


def test_the_template_home_holds_config_and_root(monkeypatch, tmp_path: Path) -> None:
    """What the first start of the template does: with HOME in the state directory and no
    --config, the daemon's default config is written there, and its root lies there too."""
    state = tmp_path / "var-lib-finishline-studio"
    state.mkdir()
    monkeypatch.setenv("HOME", str(state))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(None, write_default=True)
    assert (state / ".config" / "finishline" / "daemon.toml").is_file()
    assert cfg.root == state / "finishline"


@needs_analyze
def test_units_verify(installed: Path, instance: Path, home: dict[str, Path]) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(home["XDG_RUNTIME_DIR"])}
    for args in (
        [str(installed), str(instance)],
        ["--user", str(installed)],
    ):
        res = subprocess.run(
            [ANALYZE, "verify", *args], capture_output=True, text=True, env=env, check=False
        )
        ours = [ln for ln in res.stderr.splitlines() if "finishline" in ln]
        assert res.returncode == 0 and not ours, res.stderr


EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d)")


@needs_offline
@pytest.mark.parametrize("which", ["user", "user --user", "system"])
def test_exposure_is_below_five(
    which: str, installed: Path, instance: Path, home: dict[str, Path]
) -> None:
    unit = instance if which == "system" else installed
    mode = ["--user"] if which.endswith("--user") else []
    threshold = int(MAX_EXPOSURE * 10) - 1  # the exit status turns non-zero above 4.9
    res = subprocess.run(
        [ANALYZE, *mode, "security", "--offline=true", f"--threshold={threshold}", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(home["XDG_RUNTIME_DIR"])},
        check=False,
    )
    found = EXPOSURE.search(res.stdout)
    assert found, res.stdout + res.stderr
    score = float(found.group(1))
    assert score < MAX_EXPOSURE and res.returncode == 0, f"{unit.name}: {score}\n{res.stdout}"
