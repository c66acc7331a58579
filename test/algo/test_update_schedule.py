"""When Learner.update works: critic updates owed per env step, spent once the replay holds a batch and at most
``max_critic_updates`` per call; blocks due from the warm-up on every ``steps_per_block`` env steps, each waiting for
the critic to catch up; a stop request ends the call at the next critic update or train step, leaving what is not done
owed or due -- never half of a block or of a compaction."""
import itertools

import numpy as np
import torch

from test_update_checks import feed, make_learner


def stop_after(n):
    """A should_stop that says yes from its (n+1)-th call on."""
    calls = itertools.count(1)
    return lambda: next(calls) > n


def test_critic_waits_for_a_full_batch_then_spends_every_owed_update():
    learner = make_learner()                          # a batch of 64, half a critic update per env step
    rng, c = np.random.default_rng(0), learner.counters
    feed(learner, rng, 63)
    learner.update()
    assert (c.critic_updates, c.owed_updates) == (0, 31.5) and learner.critic_metrics == {}
    feed(learner, rng, 1)                             # the replay holds exactly one batch
    learner.update()
    assert (c.critic_updates, c.owed_updates) == (32, 0)
    assert set(learner.critic_metrics) == {'td_loss', 'q_mean', 'target_mean'}
    assert all(isinstance(v, float) for v in learner.critic_metrics.values())
    feed(learner, rng, 2)                             # owes exactly one
    learner.update()
    assert (c.critic_updates, c.owed_updates) == (33, 0)


def test_capped_critic_updates_stay_owed_and_hold_back_a_due_block():
    torch.manual_seed(0)
    learner = make_learner()
    feed(learner, np.random.default_rng(0), 250)      # owes 125 critic updates; past the 200-step warm-up
    c = learner.counters
    assert learner.update(max_critic_updates=124) == []
    assert (c.critic_updates, c.owed_updates, c.blocks_trained) == (124, 1, 0)   # one update owed: the block waits
    learner.update(max_critic_updates=100)
    assert (c.critic_updates, c.owed_updates, c.blocks_trained) == (125, 0, 1)


def test_blocks_are_due_from_the_warm_up_on_every_steps_per_block_and_one_per_call_after_a_gap():
    torch.manual_seed(0)
    learner = make_learner()                          # warm-up 200 env steps, a block every 100
    rng, c = np.random.default_rng(0), learner.counters
    trained_at = []
    for n in [50] * 8 + [250, 50]:
        feed(learner, rng, n)
        trained = c.blocks_trained
        learner.update()
        trained_at += [c.env_steps] * (c.blocks_trained - trained)
    assert trained_at == [200, 300, 400, 650, 700]    # at 650 one block for the three due since 500
    assert c.next_block_at == 800


def test_a_block_needs_two_states():
    learner = make_learner(warmup_steps=0)
    rng, c = np.random.default_rng(0), learner.counters
    feed(learner, rng, 1)
    learner.update()
    assert c.blocks_trained == 0                      # one state: nothing to hold out
    feed(learner, rng, 1)
    learner.update()
    assert c.blocks_trained == 1


def test_the_critic_is_frozen_while_a_block_climbs_it():
    """The critic's weights and gradients after a block are what its last update left (no backward pass into it)."""
    torch.manual_seed(0)
    learner = make_learner()
    feed(learner, np.random.default_rng(0), 250)
    critic_update, left = learner.critic.update, {}

    def recording_update(*args):
        out = critic_update(*args)
        left.update({n: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                     for n, p in learner.critic.named_parameters()})
        return out
    learner.critic.update = recording_update
    learner.update()
    assert learner.counters.blocks_trained == 1
    for n, p in learner.critic.named_parameters():
        weight, grad = left[n]
        assert torch.equal(p, weight) and (p.grad is None) == (grad is None), n
        assert grad is None or torch.equal(p.grad, grad), n
    assert all(p.requires_grad for p in learner.critic.q.parameters())   # and trainable again after it


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
    assert c.compactions_rejected == 0 and learner.compaction_metrics == {}   # stopped: nothing measured or counted
    assert learner.snapshot().version == c.version                    # the block stands, at its own version
