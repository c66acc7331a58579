"""SimTimeStamper: bag stamps from publish order under simulation time, whatever order messages arrive in."""
import struct

import numpy as np

from swfp_ros.data.bag_writer import SimTimeStamper, clock_ns_from_cdr

DT = 50_000_000   # one control period of sim time, ns


def clock_cdr(ns: int) -> bytes:
    return b'\x00\x01\x00\x00' + struct.pack('<iI', ns // 1_000_000_000, ns % 1_000_000_000)


def test_lockstep_ticks_arriving_shuffled_keep_their_order_and_time():
    """Per tick, as the bridge and the policy publish: /clock, joint_states, action, then the reward of that action
    (published before the next /clock). Arrival is shuffled within 40 ms; the hold is 250 ms."""
    rng = np.random.default_rng(0)
    stamper = SimTimeStamper()
    published = []
    for k in range(200):
        for j, topic in enumerate(('/clock', '/joint_states', '/swfp/action', '/swfp/reward')):
            source = k * 1_000_000 + j * 1000          # wall ns at publish: 1 ms per tick
            raw = clock_cdr(k * DT) if topic == '/clock' else f'{topic} {k}'.encode()
            published.append((topic, raw, source))
    arrivals = sorted(published, key=lambda p: p[2] + rng.uniform(0, 40_000_000))
    out = []
    for i, (topic, raw, source) in enumerate(arrivals):
        stamper.add(topic, 'T', raw, source, arrival_ns=i * 250_000)
        out += stamper.ready(now_ns=i * 250_000)
    out += stamper.flush()
    assert [(t, r) for t, _, r, _ in out] == [(t, r) for t, r, _ in published]      # publish order, all of them
    stamps = {(t, r): s for t, _, r, s in out}
    for k in range(200):
        clock, state, action, reward = (stamps[(t, r)] for t, r, _ in published[4 * k:4 * k + 4])
        assert clock == k * DT and clock < state < action < reward < (k + 1) * DT


def test_clock_cdr_decodes():
    assert clock_ns_from_cdr(clock_cdr(12 * 1_000_000_000 + 345)) == 12_000_000_345


def test_a_message_waits_for_a_late_clock_of_its_tick():
    """A recorder that drains /clock late: the action of tick 1 arrives long before the /clock ticks 1 and 2; it is
    stamped in tick 1 all the same, not in tick 0."""
    stamper = SimTimeStamper(hold_ns=10, max_hold_ns=10 ** 9)
    stamper.add('/clock', 'T', clock_cdr(0), source_ns=0, arrival_ns=0)
    stamper.add('/swfp/action', 'T', b'a1', source_ns=1_500, arrival_ns=1)
    assert [t for t, *_ in stamper.ready(now_ns=1_000)] == ['/clock']      # tick 1 not known yet: held
    stamper.add('/clock', 'T', clock_cdr(DT), source_ns=1_000, arrival_ns=2_000)
    stamper.add('/clock', 'T', clock_cdr(2 * DT), source_ns=2_000, arrival_ns=2_001)
    out = stamper.ready(now_ns=3_000)
    assert [(t, s) for t, _, _, s in out] == [('/clock', DT), ('/swfp/action', DT + 1), ('/clock', 2 * DT)]


def test_messages_before_the_first_clock_are_stamped_from_zero_in_publish_order():
    """A recorder that joins a running graph can hear a state and an action before any /clock: they wait at most
    max_hold for a tick, then are stamped 1 and 2 ns (before any tick), in publish order."""
    stamper = SimTimeStamper(hold_ns=10, max_hold_ns=1_000)
    stamper.add('/swfp/action', 'T', b'a', source_ns=6, arrival_ns=0)
    stamper.add('/joint_states', 'T', b's', source_ns=5, arrival_ns=0)
    assert stamper.ready(now_ns=999) == []
    assert [(t, s) for t, _, _, s in stamper.ready(now_ns=1_000)] == [('/joint_states', 1), ('/swfp/action', 2)]


def test_a_message_is_held_for_hold_ns_from_its_arrival():
    stamper = SimTimeStamper(hold_ns=10, max_hold_ns=1_000)
    stamper.add('/clock', 'T', clock_cdr(0), source_ns=0, arrival_ns=1_000)
    assert stamper.ready(now_ns=1_009) == []
    assert [t for t, *_ in stamper.ready(now_ns=1_010)] == ['/clock']


def test_a_recorder_that_joins_late_stamps_from_the_first_clock_it_hears():
    stamper = SimTimeStamper(hold_ns=10, max_hold_ns=1_000)
    stamper.add('/clock', 'T', clock_cdr(5 * DT), source_ns=0, arrival_ns=0)
    stamper.add('/swfp/action', 'T', b'a', source_ns=1, arrival_ns=0)
    stamper.add('/clock', 'T', clock_cdr(6 * DT), source_ns=2, arrival_ns=0)
    out = stamper.ready(now_ns=10)
    assert [(t, s) for t, _, _, s in out] == [('/clock', 5 * DT), ('/swfp/action', 5 * DT + 1), ('/clock', 6 * DT)]
