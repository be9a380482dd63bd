"""The search: serial (1+λ) hill climbing with reignite, the parallel level, evaluators, journal."""

from spnas.search.config import SearchConfig, config_from_dict, load_config
from spnas.search.journal import Journal
from spnas.search.candidate import Candidate, code_of, sample_parallel_code, stage_flops
from spnas.search.runner import Search
from spnas.search.strategy import HillClimbing, RandomSampling, Strategy

__all__ = ["SearchConfig", "config_from_dict", "load_config", "Journal", "Search", "Candidate", "code_of", "sample_parallel_code", "stage_flops",
           "Strategy", "HillClimbing", "RandomSampling"]
