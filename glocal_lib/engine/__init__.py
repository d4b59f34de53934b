"""The engine: profiles, data preparation, cached features, resumable train/eval runs.

It never knows which method it trains: it builds a model from a preset name and calls the
Model API (encode_image, compute_losses, predict, prompt_parameters, text_embeddings).
"""

from glocal_lib.engine.data_prep import DataInfo, prepare_data, select_categories
from glocal_lib.engine.evaluate import EvalSpec, eval_run_dir, run_eval
from glocal_lib.engine.features import CachedFeatures, FeatureCache
from glocal_lib.engine.profiles import Profile, available_profiles, load_profile
from glocal_lib.engine.runs import Run, find_runs, load_run
from glocal_lib.engine.train import TrainSpec, run_train, train_run_dir

__all__ = [
    "CachedFeatures", "DataInfo", "EvalSpec", "FeatureCache", "Profile", "Run", "TrainSpec",
    "available_profiles", "eval_run_dir", "find_runs", "load_profile", "load_run", "prepare_data",
    "run_eval", "run_train", "select_categories", "train_run_dir",
]
