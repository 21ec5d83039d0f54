"""Synthetic 4D scenes, the on-disk scene format, and input/target view-time sampling.

Modules:
    primitives  exact ray casting against unit sphere, box, cylinder, plane (affine-mapped)
    textures    scikit-image photos and procedural patterns
    scenes      scene graph with rigid, articulated and non-rigid motion; renderer; object scenes
    driving     road, ego vehicle, cars, pedestrians, buildings
    rigs        object rig (canonical / moving / random orbits) and 6-camera surround rig
    format      lrm4d-scene directories: reader with validation, writer (docs/data_format.md)
    synth       `lrm4d synth`: write synthetic datasets
    dataset     SceneDataset (torch) and the SPEC §4 evaluation protocols

The names below are imported lazily on first use.
"""

import importlib

_EXPORTS = {
    "SceneFormatError": "format",
    "SceneMeta": "format",
    "SceneWriter": "format",
    "find_scenes": "format",
    "load_scene": "format",
    "Scene": "scenes",
    "random_object_scene": "scenes",
    "random_driving_scene": "scenes",
    "synth_dataset": "synth",
    "SceneDataset": "dataset",
    "protocol_views": "dataset",
    "evaluation_targets": "dataset",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
