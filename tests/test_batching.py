"""Batch plans: reproducible per (seed, epoch), complete, and bucketing keeps padding small."""
import numpy as np

from hw5.data import batching


def padding_share(lengths, batches):
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded


def shemo_like(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return (np.clip(rng.lognormal(np.log(3.3), 0.6, n), 0.4, 15) * 16000).astype(int).tolist()


def test_every_example_once_and_same_plan_for_same_seed_epoch():
    lengths = shemo_like(500)
    for plan in (lambda s, e: batching.train_batches(lengths, 16, "bucket", s, e),
                 lambda s, e: batching.train_batches(lengths, 16, "dynamic", s, e),
                 lambda s, e: batching.budget_batches(lengths, 16 * 16000 * 4, s, e)):
        a = plan(0, 1)
        assert sorted(i for b in a for i in b) == list(range(500))
        assert a == plan(0, 1) and a != plan(0, 2) and a != plan(1, 1)


def test_bucketing_cuts_padding_to_a_few_percent():
    lengths = shemo_like()
    dynamic = padding_share(lengths, batching.train_batches(lengths, 16, "dynamic", 0, 0))
    bucket = padding_share(lengths, batching.train_batches(lengths, 16, "bucket", 0, 0))
    budget_plan = batching.budget_batches(lengths, 16 * 4 * 16000, 0, 0)
    budget = padding_share(lengths, budget_plan)
    fixed = 1 - sum(lengths) / (max(lengths) * len(lengths))
    assert fixed > dynamic > 0.3 and bucket <= 0.05 and budget <= 0.05
    assert all(max(lengths[i] for i in b) * len(b) <= 16 * 4 * 16000 for b in budget_plan if len(b) > 1)
