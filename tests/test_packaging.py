"""Packaging: kernels/, train/ and bench/ install as fastlift.kernels / .train / .bench only.

(a) the installed (editable) package maps the sub-packages to the repository folders and installs
    no top-level ``kernels``/``train``/``bench`` module;
(b) a regular wheel built from the repository holds them under ``fastlift/`` only, and a
    ``pip install --target`` of it imports ``fastlift.kernels`` from the target, away from the repo;
(c) the wheel declares the ``fastlift`` console script.
"""
from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import fastlift

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = {"kernels": "fastlift.kernels", "train": "fastlift.train", "bench": "fastlift.bench"}
# Folders of the source tree -> their package path inside the wheel.
SOURCE_DIRS = {"fastlift": "fastlift", "kernels": "fastlift/kernels", "train": "fastlift/train", "bench": "fastlift/bench"}
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks"}


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    env.update(extra)
    return env


def run_python(code: str, cwd, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=300)


def is_under(path, root) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------- (a) installed package
def test_subpackages_map_to_repository_folders():
    if not is_under(fastlift.__file__, REPO):
        pytest.skip(f"fastlift is imported from {fastlift.__file__}, not from this checkout (not an editable install)")
    for folder, name in SUBPACKAGES.items():
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve() == (REPO / folder / "__init__.py").resolve(), (name, mod.__file__)
        assert mod.__name__ == name


def test_no_top_level_kernels_train_bench_installed(tmp_path):
    # Away from the repository (cwd is not on the path), with the normal site-packages.
    code = (
        "import importlib.util, json\n"
        "out = {}\n"
        "for n in ('kernels', 'train', 'bench', 'fastlift.kernels', 'fastlift.train', 'fastlift.bench'):\n"
        "    s = importlib.util.find_spec(n)\n"
        "    out[n] = None if s is None else (s.origin, list(s.submodule_search_locations or []))\n"
        "print(json.dumps(out))\n"
    )
    r = run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    for name in SUBPACKAGES.values():
        assert found[name] is not None, f"{name} is not importable from an installed fastlift"
    dist_files = set()
    dist = importlib.metadata.distribution("fastlift")
    for f in dist.files or []:
        dist_files.add(str(Path(dist.locate_file(f)).resolve()))
    for top in SUBPACKAGES:
        spec = found[top]
        if spec is None:
            continue
        origin, locations = spec
        # Something else may own such a name, but never this project.
        for p in [origin, *locations]:
            assert p is None or not is_under(p, REPO), f"top-level {top!r} resolves into the repository: {p}"
            assert p is None or str(Path(p).resolve()) not in dist_files, f"fastlift installs top-level {top!r}: {p}"


def test_installed_distribution_declares_only_fastlift():
    dist = importlib.metadata.distribution("fastlift")
    top = dist.read_text("top_level.txt")
    if top is not None:
        assert top.split() == ["fastlift"]
    # Editable installs (setuptools >= 64) map names through a finder module; check its mapping.
    finders = [f for f in dist.files or [] if f.name.startswith("__editable__") and f.name.endswith("_finder.py")]
    for f in finders:
        mod = importlib.import_module(f.stem)
        names = set(getattr(mod, "MAPPING", {})) | set(getattr(mod, "NAMESPACES", {}))
        assert names, f"{f.name} maps nothing"
        assert all(n == "fastlift" or n.startswith("fastlift.") for n in names), names
        if "fastlift.kernels" in getattr(mod, "MAPPING", {}):
            assert Path(mod.MAPPING["fastlift.kernels"]).name == "kernels"


# ---------------------------------------------------------------------- (b) regular wheel
def _copy_sources(dst: Path) -> None:
    """Copy the files a checkout would build from (tracked + untracked-not-ignored), so the build
    neither writes build/ or *.egg-info into the shared checkout nor picks up stale build output."""
    files = None
    if (REPO / ".git").exists() and shutil.which("git"):
        r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            files = [f for f in r.stdout.decode().split("\0") if f]
    if files is None:
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                 and not ({".git", "build", "dist"} | IGNORED_PARTS) & set(p.relative_to(REPO).parts)]
    for rel in files:
        src = REPO / rel
        if not src.is_file() or IGNORED_PARTS & set(Path(rel).parts):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    _copy_sources(src)
    out = tmp_path_factory.mktemp("dist")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(out), str(src)], capture_output=True, text=True, env=clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = list(out.glob("fastlift-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    print(f"wheel built in {time.perf_counter() - t0:.1f} s")
    return src, wheels[0]


def test_wheel_contents(wheel):
    src, whl = wheel
    names = zipfile.ZipFile(whl).namelist()
    for required in ("fastlift/__init__.py", "fastlift/kernels/__init__.py", "fastlift/train/__init__.py",
                     "fastlift/bench/__init__.py", "fastlift/reference.py", "fastlift/cli.py"):
        assert required in names, required
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"kernels", "train", "bench", "tests"}, sorted(tops)
    assert all(t == "fastlift" or (t.startswith("fastlift-") and t.endswith(".dist-info")) for t in tops), sorted(tops)
    # Every Python source (and benchmark result: JSON, CSV, PNG chart) of the mapped folders made it into the wheel.
    missing = []
    for folder, pkg in SOURCE_DIRS.items():
        base = src / folder
        for p in base.rglob("*"):
            rel = p.relative_to(base)
            if not p.is_file() or IGNORED_PARTS & set(rel.parts):
                continue
            if folder == "fastlift" and rel.parts[0] in SOURCE_DIRS:  # not nested copies
                continue
            if p.suffix == ".py" or (folder == "bench" and rel.parts[0] == "results"
                                     and p.suffix in (".json", ".csv", ".png")):
                target = f"{pkg}/{rel.as_posix()}"
                if target not in names:
                    missing.append(target)
    assert not missing, f"not packaged (add the sub-package to pyproject's packages / package-data): {missing}"
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(whl).read(top_level[0]).decode().split() == ["fastlift"]


def test_wheel_declares_console_script(wheel):
    _, whl = wheel
    z = zipfile.ZipFile(whl)
    ep = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert len(ep) == 1
    cfg = configparser.ConfigParser()
    cfg.read_string(z.read(ep[0]).decode())
    assert cfg.get("console_scripts", "fastlift").strip() == "fastlift.cli:main"


def test_wheel_installs_and_imports_away_from_repo(wheel, tmp_path):
    _, whl = wheel
    target = tmp_path / "target"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                        str(whl)], capture_output=True, text=True, env=clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    installed = {p.name for p in target.iterdir()}
    assert not installed & {"kernels", "train", "bench"}, installed
    assert "fastlift" in installed
    assert (target / "bin" / "fastlift").exists(), installed

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    code = (
        "import json, sys, io, contextlib\n"
        "import fastlift, fastlift.kernels, fastlift.train, fastlift.bench\n"
        "from fastlift.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['info', '--json'])\n"
        "print(json.dumps({'files': [m.__file__ for m in (fastlift, fastlift.kernels, fastlift.train, fastlift.bench)],\n"
        "                  'rc': rc, 'info': json.loads(buf.getvalue()),\n"
        "                  'path': sys.path}))\n"
    )
    r = run_python(code, cwd, PYTHONPATH=str(target))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    # The repository's sources must not be on the path; the environment's own site-packages may
    # live inside the checkout (the README creates .venv there), which is not the repo's code.
    env_prefix = Path(sys.prefix).resolve()
    on_path = [p for p in result["path"] if os.path.isabs(p) and is_under(p, REPO) and not is_under(p, env_prefix)]
    assert not on_path, result["path"]
    for f in result["files"]:
        assert is_under(f, target), f"imported {f}, expected it under {target}"
    assert Path(result["files"][1]).parent.name == "kernels" and Path(result["files"][1]).parent.parent.name == "fastlift"
    assert result["rc"] == 0 and result["info"]["parameters"] == 16_952_371


# ---------------------------------------------------------------------- (d) a fresh venv, as users install it
def _venv_site_packages(env_dir: Path) -> Path:
    found = list((env_dir / "lib").glob("python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def test_wheel_in_fresh_venv_runs_every_command(wheel, tmp_path):
    """``pip install fastlift-*.whl`` into a new venv, then the CLI from a folder outside the source tree.

    The heavy dependencies (torch 2.13.0, numpy, triton, tqdm) are made visible to the new venv
    by a ``.pth`` line that appends this interpreter's site-packages folders to ``sys.path``
    (no re-download of ~1 GB per run); that line does not process their ``.pth`` files, so the
    editable install of the checkout stays invisible and fastlift itself comes from the wheel.
    """
    import site
    import sysconfig

    _, whl = wheel
    t0 = time.perf_counter()
    env_dir = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(env_dir)], capture_output=True, text=True,
                       env=clean_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    py = env_dir / "bin" / "python"
    # The venv's own pip installs the wheel *before* the dependency .pth below exists: it sees only
    # the venv, so it can never touch (uninstall) the fastlift of the environment running the tests.
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", str(whl)],
                       capture_output=True, text=True, env=clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parent_sites = [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]])
                    if Path(p).is_dir()]
    (_venv_site_packages(env_dir) / "zz_fastlift_test_deps.pth").write_text(
        "import sys; sys.path.extend(" + repr(parent_sites) + ")\n")
    console = env_dir / "bin" / "fastlift"
    assert console.exists()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = clean_env(PYTHONNOUSERSITE="1")
    env.pop("VIRTUAL_ENV", None)

    def run(*argv, timeout=600):
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)

    # fastlift comes from the venv, its dependencies resolve, the checkout is not importable
    r = run(py, "-c", "import fastlift, torch, numpy, tqdm, importlib.metadata as m; "
                      "print(fastlift.__file__); print(m.version('fastlift'))")
    assert r.returncode == 0, r.stderr
    assert is_under(r.stdout.splitlines()[0], env_dir), r.stdout
    r = run(console, "--help")
    assert r.returncode == 0, r.stderr
    from fastlift.cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        assert name in r.stdout, f"subcommand {name!r} missing from the installed CLI's --help:\n{r.stdout}"
    # every subcommand's --help, through the installed console script's entry point (one process)
    code = ("import sys, importlib.metadata as m\n"
            "main = [e for e in m.entry_points(group='console_scripts') if e.name == 'fastlift'][0].load()\n"
            f"for name in {list(SUBCOMMANDS)!r}:\n"
            "    try:\n"
            "        main([name, '--help'])\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (name, e.code)\n"
            "    print('HELP-OK', name, flush=True)\n")
    r = run(py, "-c", code)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("HELP-OK") == len(SUBCOMMANDS), r.stdout
    # the main job's quick mode, via the console script
    r = run(console, "demo", "--quick", "--out", cwd / "demo", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (cwd / "demo" / "report.md").is_file() and (cwd / "demo" / "checkpoint" / "epoch_1.bin").is_file()
    assert "Traceback" not in r.stderr
    print(f"fresh-venv install + CLI checks + demo --quick: {time.perf_counter() - t0:.1f} s")
    # the environment running the tests still has its own fastlift (the venv's pip never saw it)
    assert importlib.metadata.distribution("fastlift") is not None
