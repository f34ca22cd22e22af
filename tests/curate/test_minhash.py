"""Near-duplicate detection computed in numpy gives what datasketch gives."""

import random
from collections import defaultdict

from datasketch import MinHash, MinHashLSH

from flywheel.curate.examples import (
    _shingles,
    band_keys,
    lsh_components,
    lsh_parameters,
    minhash_signatures,
    near_duplicate_clusters,
    shingle_hash,
)


def _texts(n=600, seed=1):
    rng = random.Random(seed)
    words = [
        "order",
        "refund",
        "weather",
        "flight",
        "hotel",
        "invoice",
        "account",
        "password",
        "shipping",
        "table",
        "price",
    ]
    bases = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n // 6)]
    out = []
    for _ in range(n):
        text = rng.choice(bases).split()
        if rng.random() < 0.5:  # a near-duplicate: one word changed
            text[rng.randrange(len(text))] = rng.choice(words)
        out.append(" ".join(text) + ("" if rng.random() < 0.7 else f" please {rng.randrange(3)}"))
    return out


def test_signatures_are_datasketchs():
    texts = _texts(200) + ["", "one", "Two words", "a b c", "the the the the"]  # short ones too
    ours = minhash_signatures(texts, 64, chunk=37)  # chunks that do not divide the input
    for i, text in enumerate(texts):
        theirs = MinHash(num_perm=64, seed=7, hashfunc=shingle_hash)
        theirs.update_batch([s.encode() for s in _shingles(text)])
        assert (ours[i] == theirs.hashvalues).all()


def test_clusters_are_the_components_of_datasketchs_lsh_candidates():
    texts = _texts()
    threshold, num_perm = 0.6, 64
    bands, rows = lsh_parameters(threshold, num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=7, hashfunc=shingle_hash)
        m.update_batch([s.encode() for s in _shingles(text)])
        hashes.append(m)
        lsh.insert(i, m)
    assert (lsh.b, lsh.r) == (bands, rows)
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    expected = defaultdict(set)
    for i in range(len(texts)):
        expected[find(i)].add(i)
    ours = near_duplicate_clusters(texts, threshold, num_perm)
    assert sorted(map(sorted, ours)) == sorted(map(sorted, expected.values()))
    assert len(ours) < len(texts) * 0.7  # there were near-duplicates to find
    labels = lsh_components(band_keys(minhash_signatures(texts, num_perm), bands, rows))
    assert all(labels[i] <= i for i in range(len(texts)))  # the smallest member names a component


def test_identical_texts_always_join_and_distinct_ones_rarely():
    texts = ["book a table for two tonight at eight"] * 3 + [
        f"completely different request {i} x y z" for i in range(50)
    ]
    clusters = near_duplicate_clusters(texts, 0.9, 64)
    assert sorted(clusters[0]) == [0, 1, 2] and len(clusters) == 51
    assert near_duplicate_clusters([], 0.9, 64) == [] and near_duplicate_clusters(["a"], 0.9, 64) == [[0]]
