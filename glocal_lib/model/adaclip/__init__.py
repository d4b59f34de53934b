"""AdaCLIP (Cao et al., ECCV 2024) as its released code computes it (spec adaclip.md)."""

from glocal_lib.adaclip_config import AdaCLIPConfig

from .detector import AdaCLIPDetector, adaclip_class_name, sentences

__all__ = ["AdaCLIPConfig", "AdaCLIPDetector", "adaclip_class_name", "sentences"]
