"""Backbones: the registry of specs, the keras.applications table, and the TF Hub source.

The registry (`tltf.backbones.registry`) holds plain specs and knows no source; a source adds
a name prefix with `register_source`. Importing this package registers the built-in ones:
the keras.applications families and `hub:` (TF Hub SavedModels, `tltf.backbones.hub`).
"""

from tltf.backbones.hub import HubLayer, hub_backbone
from tltf.backbones.registry import BackboneSpec, get_backbone, list_backbones, register_backbone

__all__ = ["BackboneSpec", "HubLayer", "get_backbone", "hub_backbone", "list_backbones",
           "register_backbone"]
