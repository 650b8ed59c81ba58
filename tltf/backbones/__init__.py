"""Backbones: the registry of specs, the keras.applications table, the TF Hub and KerasHub sources.

The registry (`tltf.backbones.registry`) holds plain specs and knows no source. Importing
this package registers the built-in ones: the keras.applications families
(`tltf.backbones._applications`) and the `hub:` source with the well-known TF Hub backbones
(`tltf.backbones.hub_source`, around `tltf.backbones.hub.HubLayer`), and the `kerashub:`
source with the KerasHub presets tltf registers by name (`tltf.backbones.kerashub`; keras_hub
itself is imported only when such a backbone is built).
"""

import tltf.backbones._applications  # noqa: F401  (registers the keras.applications specs)
from tltf.backbones.hub import HubLayer
from tltf.backbones.hub_source import hub_backbone
from tltf.backbones.kerashub import kerashub_backbone
from tltf.backbones.registry import BackboneSpec, get_backbone, list_backbones, register_backbone

__all__ = ["BackboneSpec", "HubLayer", "get_backbone", "hub_backbone", "kerashub_backbone",
           "list_backbones", "register_backbone"]
