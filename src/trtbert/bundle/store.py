"""Opening a bundle (checked: schema, files, checksums) and changing its manifest under a lock."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trtbert.bundle.files import atomic_write_text, locked, sha256_file
from trtbert.bundle.manifest import (
    ENGINES_DIR,
    MANIFEST,
    SOURCE_SET,
    TOKENIZER_DIR,
    WORD_EMBEDDINGS,
    EngineSet,
    FileEntry,
    Manifest,
)
from trtbert.errors import BundleError

log = logging.getLogger(__name__)


def file_entry(root: Path, rel: str) -> FileEntry:
    """Measure a file of a bundle being written."""
    path = root / rel
    return FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path))


@dataclass(frozen=True)
class FileStamp:
    """What a verified file looked like on disk (so a later change is noticed before it is read again)."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        """The stamp of ``path`` as it is now."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def check(self, path: Path) -> None:
        """Refuse ``path`` if it changed (or vanished) since it was stamped: a rebuild or copy mid-run."""
        try:
            now = FileStamp.of(path)
        except FileNotFoundError:
            raise BundleError(f"{path} was deleted while in use; restore the bundle and rerun") from None
        if now != self:
            raise BundleError(f"{path} changed on disk while in use (it was verified at start); do not "
                              "modify a bundle while it runs, then rerun")


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle: its root and manifest (and the stamps of the files verified)."""

    root: Path
    manifest: Manifest
    stamps: dict[str, FileStamp] = field(default_factory=dict, compare=False)

    def path(self, rel: str) -> Path:
        """Absolute path of a file of the bundle."""
        return self.root / rel

    def file_size(self, rel: str) -> int:
        """Size of a listed file, from the manifest."""
        return self.manifest.files[rel].size

    def engine_set(self, name: str) -> EngineSet:
        """The engine set ``name``; ``onnx`` is the exported graphs themselves."""
        if name == SOURCE_SET:
            recorded = self.manifest.export.get("costs") or {}
            return EngineSet(
                name=SOURCE_SET, backend="ort", precision="fp32",
                stage_files={s.name: s.file for s in self.manifest.stages},
                costs=recorded.get("costs", {}), shared=recorded.get("shared", {}),
                options=recorded.get("options", {}),
            )
        sets = self.manifest.engine_sets
        if name not in sets:
            built = ", ".join([SOURCE_SET, *sets]) or SOURCE_SET
            raise BundleError(
                f"bundle {self.root} has no engine set {name!r} (has: {built}); "
                f"build it with: trtbert build {self.root} --name {name} ..."
            )
        return sets[name]

    def verify(self, files: list[str] | None = None, checksums: bool = True) -> None:
        """Check that listed files exist with their size (and sha256); raise :class:`BundleError` if not.

        Each file checked is stamped (size, mtime, inode): :meth:`FileStamp.check` compares against it.
        """
        entries = self.manifest.files
        for rel in files if files is not None else list(entries):
            entry = entries.get(rel)
            if entry is None:
                raise BundleError(f"bundle {self.root}: {rel} is not listed in the manifest; re-export the bundle")
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"bundle {self.root} is incomplete: {rel} is missing; {_fix(rel)}")
            stamp = FileStamp.of(path)
            if stamp.size != entry.size:
                raise BundleError(
                    f"bundle {self.root} is corrupted: {rel} has {stamp.size} bytes, "
                    f"the manifest says {entry.size}; {_fix(rel)}"
                )
            if checksums and sha256_file(path) != entry.sha256:
                raise BundleError(
                    f"bundle {self.root} is corrupted: {rel} does not match its sha256 in the manifest; {_fix(rel)}"
                )
            if FileStamp.of(path) != stamp:
                raise BundleError(f"{path} changed while it was being verified; stop whatever writes it and retry")
            self.stamps[rel] = stamp

    def files_of_set(self, set_name: str) -> list[str]:
        """Every file needed to run with one engine set (engines and what they read, word embeddings,
        tokenizer)."""
        engines = self.engine_set(set_name)
        wanted = set(engines.stage_files.values()) | set(engines.files)
        wanted.update(f for f in self.manifest.files if f == WORD_EMBEDDINGS or f.startswith(TOKENIZER_DIR + "/"))
        return sorted(wanted)


def _fix(rel: str) -> str:
    return "rebuild the engine set (trtbert build ... --overwrite)" if rel.startswith(ENGINES_DIR + "/") \
        else "re-export the bundle"


def read_manifest(root: Path) -> Manifest:
    """Parse ``root/manifest.json`` (no file checks)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root} is a file, not a bundle directory; give the directory trtbert export wrote")
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist; create it with: trtbert export --model MODEL --out {root}")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} is not a complete bundle: {MANIFEST} is missing (an interrupted export?); re-export it"
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} cannot be read ({exc}); re-export the bundle") from exc
    return Manifest.from_json(data)


def load_bundle(root: str | Path, verify: str = "full") -> Bundle:
    """Open a bundle and check it: manifest schema and version, every file present, checksums.

    ``verify`` is ``full`` (sizes and sha256 of every file), ``sizes`` or ``none``.
    """
    if verify not in ("full", "sizes", "none"):
        raise ValueError(f"verify must be full, sizes or none, not {verify!r}")
    root = Path(root)
    bundle = Bundle(root=root, manifest=read_manifest(root))
    if verify != "none":
        bundle.verify(checksums=verify == "full")
    return bundle


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (temporary file, fsync, rename). Callers that change an existing
    bundle use :func:`update_manifest`."""
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")


def update_manifest(root: Path, change: Callable[[Manifest], Manifest]) -> Manifest:
    """Read-modify-write the manifest under the bundle's lock, so concurrent writers (``build``,
    ``eval --calibrate``) never lose each other's update. Returns the manifest written."""
    root = Path(root)
    with locked(root):
        new = change(read_manifest(root))
        write_manifest(root, new)
    return new


def replace_policy(root: Path, policy: dict | None) -> Manifest:
    """Set the bundle's default exit policy."""
    return update_manifest(root, lambda m: dataclasses.replace(m, exit_policy=policy))
