"""The word-embedding table, read row by row from ``onnx/word_embeddings.npy`` (never loaded whole).

The table is the largest single tensor of BERT-base (30522 x 768 x 4 B = 89 MiB) and a batch needs
only its tokens' rows (a file read, not a memory map). They are read with ``pread``: a memory-mapped gather looks cheaper but is
not — the kernel maps whole page-cache folios around each touched row, so gathering 300 random rows
of the bert-base table left 78 MiB resident, against 0.9 MiB with ``pread``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trtbert.bundle import FileStamp
from trtbert.errors import BundleError


class EmbeddingTable:
    """Rows of a 2-D float32 ``.npy`` table, gathered with one ``pread`` per distinct token."""

    def __init__(self, path: str | Path, stamp: FileStamp | None = None) -> None:
        self.path = Path(path)
        self._stamp = stamp
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                self._offset = fh.tell()
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read the word-embedding table {self.path}: {exc}; re-export the bundle") from None
        if len(shape) != 2 or fortran or np.dtype(dtype) != np.float32:
            raise BundleError(f"{self.path} is not a 2-D C-order float32 table ({shape}, {dtype}); re-export the bundle")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self._row_bytes = self.shape[1] * 4
        self._fd: int | None = os.open(self.path, os.O_RDONLY)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """``ids (B, S) int64 -> (B, S, E) float32``: the table's rows of those token ids."""
        if self._fd is None:
            raise BundleError(f"the word-embedding table {self.path} is closed")
        if self._stamp is not None:
            self._stamp.check(self.path)
        unique, inverse = np.unique(ids, return_inverse=True)
        if unique.size and (unique[0] < 0 or unique[-1] >= self.shape[0]):
            raise BundleError(f"token id out of range for {self.path} ({self.shape[0]} rows): the tokenizer "
                              "does not match the bundle; re-export it")
        rows = np.empty((unique.size, self.shape[1]), dtype=np.float32)
        for i, token in enumerate(unique.tolist()):
            if os.preadv(self._fd, [memoryview(rows[i]).cast("B")], self._offset + token * self._row_bytes) != self._row_bytes:
                raise BundleError(f"{self.path} is truncated; re-export the bundle")
        return rows[inverse.reshape(ids.shape)]

    def close(self) -> None:
        """Close the file. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
