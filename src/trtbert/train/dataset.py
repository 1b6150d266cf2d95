"""Tokenised GLUE examples as a torch dataset, with per-batch padding and a seeded order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from trtbert.data import Example, Task


class EncodedDataset(Dataset):
    """Token ids (unpadded) and labels of a list of examples."""

    def __init__(self, tokenizer: Any, examples: Sequence[Example], task: Task, max_seq_len: int) -> None:
        pairs = examples[0].text_b is not None if examples else False
        enc = tokenizer(
            [e.text_a for e in examples],
            [e.text_b or "" for e in examples] if pairs else None,
            truncation=True,
            max_length=max_seq_len,
        )
        self.input_ids: list[list[int]] = enc["input_ids"]
        self.token_type_ids: list[list[int]] | None = enc.get("token_type_ids")
        self.labels = torch.tensor(
            [e.label for e in examples], dtype=torch.float32 if task.is_regression else torch.long
        )

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[i]
        return item


def make_collate(tokenizer: Any, token_types: bool) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """transformers' ``DataCollatorWithPadding`` (pads a batch to its longest row, builds the attention
    mask), dropping token types where the family has none."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = torch.stack([item["labels"] for item in items])
        batch = pad([{k: v for k, v in item.items() if k != "labels"} for item in items])
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
        if token_types:
            out["token_type_ids"] = batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
        return out

    return collate


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, collate: Callable | None = None) -> DataLoader:
    """A DataLoader whose shuffled order depends only on ``seed`` (and the epoch)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate)
