"""What a run leaves behind: metrics.jsonl, TensorBoard events, PNG sample grids."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Mapping

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """[N, H, W, C] floats in [-1, 1] -> one uint8 [rows*H, cols*W, C] grid (1 px gaps)."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.zeros((rows * (h + 1) - 1, columns * (w + 1) - 1, c), np.uint8)
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  for i in range(n):
    r, q = divmod(i, columns)
    grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = pixels[i]
  return grid


def save_png(path: str | pathlib.Path, image: np.ndarray) -> None:
  image = image[..., 0] if image.shape[-1] == 1 else image
  Image.fromarray(image).save(path)


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and TensorBoard, images to TensorBoard.

  `enabled=False` (processes other than 0) makes every call a no-op.
  """

  def __init__(self, workdir: str | pathlib.Path, enabled: bool = True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
      self._jsonl = open(self.path, "a", encoding="utf-8")

  def truncate_after(self, step: int) -> None:
    """Drops logged entries past `step` (a resumed run logs them again)."""
    if not self.enabled or not self.path.exists():
      return
    self._jsonl.close()
    lines = [l for l in self.path.read_text(encoding="utf-8").splitlines()
             if l.strip() and json.loads(l).get("step", 0) <= step]
    self.path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    self._jsonl = open(self.path, "a", encoding="utf-8")

  def scalars(self, step: int, values: Mapping[str, float], jsonl: bool = True) -> None:
    """Logs `values` at `step` to TensorBoard, and to metrics.jsonl unless `jsonl=False`."""
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    if jsonl:
      self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
      self._jsonl.flush()
    for k, v in values.items():
      self._tb.add_scalar(k, v, int(step))

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, image, int(step), dataformats="HWC")

  def flush(self) -> None:
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
