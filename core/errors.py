"""Errors a person can read: pages catch `ZooScopeError` and show its message."""


class ZooScopeError(Exception):
    """Base class: the message is one sentence meant for the person using the app."""


class ImageError(ZooScopeError):
    """An uploaded file could not be turned into an RGB image."""


class WeightsUnavailable(ZooScopeError):
    """A model's weights file is not on this machine and could not be fetched or verified."""


class NetworkUnavailable(WeightsUnavailable):
    """A download failed because this machine cannot reach the network (not a 404, not a bad file)."""


class UnknownModel(ZooScopeError):
    """A model name that is not in the catalogue."""


class UnknownWeights(UnknownModel):
    """A weights version a model does not have (resnet50 has IMAGENET1K_V1 and IMAGENET1K_V2)."""
