"""Learner.update(should_stop=...): a stop request ends the call at the next critic update or train step, leaving
what is not done owed or due -- never half of a block or of a compaction."""
import numpy as np
import torch

from test_update_checks import feed, make_learner


def stop_after(n):
    """A should_stop that says yes from its (n+1)-th call on; counts its calls."""
    calls = [0]

    def should_stop():
        calls[0] += 1
        return calls[0] > n
    should_stop.calls = calls
    return should_stop


def test_stop_during_the_critic_updates_keeps_the_rest_owed():
    torch.manual_seed(0)
    learner = make_learner()
    feed(learner, np.random.default_rng(0), 100)      # owes 50 critic updates, the replay holds a batch
    c = learner.counters
    assert learner.update(should_stop=stop_after(7)) == []
    assert c.critic_updates == 7 and c.owed_updates == 43


def test_stop_during_a_block_leaves_it_due():
    torch.manual_seed(0)
    learner = make_learner()
    feed(learner, np.random.default_rng(0), 250)      # past the 200-step warm-up: a block is due after the critic
    c = learner.counters
    stop = stop_after(int(c.owed_updates) + 10)       # every owed critic update, then 10 train steps of the block
    assert learner.update(should_stop=stop) == []
    assert c.owed_updates < 1 and c.critic_updates == 125
    assert (c.blocks_trained, c.version, len(learner.policy.blocks)) == (0, 0, 0)
    assert c.next_block_at <= c.env_steps                              # still due
    learner.update()
    assert c.blocks_trained == 1 and c.next_block_at > c.env_steps     # trained when not stopped


def test_stop_during_a_compaction_keeps_the_block():
    torch.manual_seed(0)
    learner = make_learner(max_blocks=1)              # every accepted block triggers a compaction
    rng = np.random.default_rng(0)
    c = learner.counters
    while True:
        feed(learner, rng, 50)
        block_steps = learner.cfg.block.train_steps
        # stop only once the block is trained: every critic update and train step asks, then the compaction does
        ups = learner.update(should_stop=stop_after(int(c.owed_updates) + block_steps))
        if ups:
            break
        assert c.compactions == 0
    assert [u.kind for u in ups] == ['block'] and c.compactions == 0 and len(learner.policy.blocks) == 1
    assert learner.snapshot().version == c.version                    # the block stands, at its own version
