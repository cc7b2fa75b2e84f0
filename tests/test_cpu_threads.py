"""cpu_threads: which cores each CPU engine's threads are bound to (VLLM_CPU_OMP_THREADS_BIND per engine)."""

from __future__ import annotations

import pytest

from interplay.generator.runtime.engine import BIND_ENV, cpu_thread_binds


def test_vllm_keeps_its_own_binding(make_config):
    assert cpu_thread_binds(make_config(), [0, 1]) == {}  # the default: cpu_threads: vllm


def test_all_gives_the_shared_engine_every_core(make_config):
    assert cpu_thread_binds(make_config(cpu_threads="all"), [0, 1, 2, 3]) == {"user": "0,1,2,3",
                                                                             "recommender": "0,1,2,3"}


@pytest.mark.parametrize("cpus, user, recommender", [([0, 1], "0", "1"), ([2, 3, 5, 7, 8], "2,3", "5,7,8"),
                                                     ([4], "4", "4")])
def test_all_splits_the_cores_between_separate_engines(make_config, cpus, user, recommender):
    config = make_config(cpu_threads="all", topology="separate",
                         user={"sampling": {"max_tokens": 64}, "engine": {"model": "m"}},
                         recommender={"sampling": {"max_tokens": 64}, "engine": {"model": "m"}})
    assert cpu_thread_binds(config, cpus) == {"user": user, "recommender": recommender}


def test_a_binding_set_in_the_environment_wins(make_config, monkeypatch):
    monkeypatch.setenv(BIND_ENV, "1")
    assert cpu_thread_binds(make_config(cpu_threads="all"), [0, 1]) == {}


def test_cpu_threads_does_not_change_the_corpus_hash(make_config):
    assert make_config(cpu_threads="all").hash() == make_config().hash()
