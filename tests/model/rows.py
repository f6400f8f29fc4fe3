"""Batches the model tests build alike for every family: packed rows (segment ids and the positions
they imply) and left-padded prompts decoded one token at a time through the KV cache."""

import jax.numpy as jnp
import numpy as np


def packed(lengths: list[list[int]], T: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment_ids, positions) [rows, T] for rows packed with examples of these lengths: segments
    1, 2, ... in order, a row's padding after them segment 0; positions restart at 0 per segment
    (the padding's too), as runner/data/pack.py lays packed rows out."""
    segments = np.zeros((len(lengths), T), np.int32)
    positions = np.zeros((len(lengths), T), np.int32)
    for row, parts in enumerate(lengths):
        segments[row, : sum(parts)] = np.repeat(np.arange(1, len(parts) + 1), parts)
        rest = [T - sum(parts)] if sum(parts) < T else []
        positions[row] = np.concatenate([np.arange(n) for n in parts + rest])
    return segments, positions


def left_padded(seqs: np.ndarray, lengths: list[int], prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, attention mask) [rows, prompt_len]: row b's first lengths[b] tokens of seqs, padded
    on the left to the longest prompt."""
    prompt = np.zeros((len(lengths), prompt_len), np.int32)
    mask = np.zeros((len(lengths), prompt_len), np.int32)
    for b, n in enumerate(lengths):
        prompt[b, prompt_len - n :] = seqs[b, :n]
        mask[b, prompt_len - n :] = 1
    return prompt, mask


def decode(extend, model, cache, seqs: np.ndarray, lengths: list[int], steps: int):
    """`steps` T=1 extensions after the prompts, each row fed its own next token of seqs (teacher
    forcing): (the logits [rows, V] of each step, the cache)."""
    decoded = []
    for t in range(steps):
        token = jnp.asarray([[seqs[b, lengths[b] + t]] for b in range(len(lengths))], jnp.int32)
        logits, cache = extend(model, token, cache, None)
        decoded.append(np.asarray(logits[:, 0]))
    return decoded, cache
