"""Published dense checkpoints the paper fine-tunes, recognised by the key layout of their state dict.

"Balancing Act" (ICLR 2024) starts from three public dense models; each file loads exactly as downloaded
(``model.checkpoint: path/to/file``):

* CIFAR-100: ``cifar100_resnet56-f2eff4c8.pt`` of ``chenyaofo/pytorch-cifar-models``, into ``resnet56``
  (layout :class:`ChenyaofoCifar100ResNet56`);
* FairFace: ``res34_fair_align_multi_7_20190809.pt`` of ``dchen236/FairFace``, into ``resnet34``; its
  18-way head is cut to the target's classes by class name (layout :class:`FairFaceResNet34`);
* UTKFace: the authors' ``mobilenet_v2_utkface_{race,gender}.pt``, into ``mobilenet_v2``
  (layout :class:`TorchvisionMobileNetV2`).

:data:`LAYOUTS` is the registry: each layout has a ``name``, the model names it loads into (``models``),
a ``recognise`` test on the keys and shapes of a state dict, and a ``patch`` that turns the file's state
dict into one of our model (e.g. the FairFace head slicing). :func:`adapt_state_dict` applies it, falls
back to our own formats (a state dict of the configured model, or a checkpoint holding one under
``"model"``), and checks every key and shape against the model, with one-line
:class:`~constrained_fairness.errors.CheckpointError` messages that name the file, the first missing or
unexpected key (or the first shape mismatch) and the expected format. Reading the file is the caller's
job (:func:`constrained_fairness.training.checkpoint.load_model_weights`, with ``weights_only=True``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.fairface import FAIRFACE_GENDERS, FAIRFACE_RACES
from ..errors import CheckpointError

StateDict = dict[str, torch.Tensor]

OWN_FORMAT = "state_dict"
"""Layout name returned for our own formats (a plain state dict, or one under ``"model"``)."""

_PARAM = r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
_CIFAR_RESNET_KEY = re.compile(rf"(conv1|bn1|fc|layer[1-3]\.\d+\.(conv[12]|bn[12]|downsample\.[01])){_PARAM}")
_TV_BASIC_RESNET_KEY = re.compile(
    rf"(conv1|bn1|fc|layer[1-4]\.\d+\.(conv[12]|bn[12]|downsample\.[01])){_PARAM}"
)
_TV_MOBILENET_V2_KEY = re.compile(rf"(features\.\d+(\.[a-z_]+|\.\d+)*|classifier\.1){_PARAM}")

FAIRFACE_HEAD_RACES: tuple[str, ...] = FAIRFACE_RACES
"""Race classes of rows 0-6 of the FairFace ResNet-34 head, in row order: FairFace's own order, the
one our loader uses (:data:`~constrained_fairness.data.fairface.FAIRFACE_RACES`)."""
FAIRFACE_HEAD_GENDERS: tuple[str, ...] = FAIRFACE_GENDERS
"""Gender classes of rows 7-8 of the FairFace ResNet-34 head (rows 9-17 are the 9 age bins)."""
_FAIRFACE_GENDER_ROW0 = len(FAIRFACE_HEAD_RACES)
_FAIRFACE_HEAD_ROWS = 18


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _blocks(state: Mapping[str, Any], stage: str) -> int:
    """Number of blocks of ``stage`` (e.g. ``"layer2"``): one more than the largest block index."""
    found = [int(k.split(".")[1]) for k in state if k.startswith(f"{stage}.")]
    return max(found) + 1 if found else 0


class PublishedLayout:
    """A known key layout of a published state dict; each subclass's docstring states the format."""

    name: ClassVar[str]
    """The name :func:`adapt_state_dict` returns, e.g. ``"torchvision_mobilenet_v2"``."""
    models: ClassVar[tuple[str, ...]]
    """Our model names (:data:`constrained_fairness.models.BUILTIN_MODELS`) the file loads into."""
    summary: ClassVar[str]
    """What the file is, for messages."""
    hint: ClassVar[str]
    """The expected keys, for messages."""

    def recognise(self, state: Mapping[str, Any]) -> bool:
        """Whether ``state`` (keys and shapes) has this layout."""
        raise NotImplementedError

    def patch(
        self, state: StateDict, *, model: nn.Module, class_names: Sequence[str] | None, source: str
    ) -> StateDict:
        """The state dict of our model built from the file's ``state`` (a fresh dict the patch may
        change in place; default: unchanged)."""
        return state


class ChenyaofoCifar100ResNet56(PublishedLayout):
    """chenyaofo's CIFAR-100 ResNet-56, ``cifar100_resnet56-f2eff4c8.pt`` (chenyaofo/pytorch-cifar-models).

    A plain state dict: stem ``conv1.weight`` (16, 3, 3, 3) and ``bn1.*``; ``layer1``-``layer3`` of 9 basic
    blocks each (``conv1``/``bn1``/``conv2``/``bn2``, 16, 32 and 64 channels), the first block of ``layer2``
    and ``layer3`` with a projection shortcut ``downsample.0`` (1x1 conv, no bias) + ``downsample.1`` (BN),
    e.g. ``layer2.0.downsample.0.weight`` (32, 16, 1, 1); BN keys include ``num_batches_tracked``; the
    classifier ``fc.weight`` (100, 64) and ``fc.bias`` (100,). Class ``i`` is CIFAR-100 fine label ``i``.
    It is exactly the state dict of our ``resnet56`` with 100 classes, so it loads unchanged.
    """

    name = "chenyaofo_cifar100_resnet56"
    models = ("resnet56",)
    summary = "chenyaofo's CIFAR-100 ResNet-56"
    hint = "chenyaofo's CIFAR ResNet-56 keys such as layer2.0.downsample.0.weight"

    def recognise(self, state: Mapping[str, Any]) -> bool:
        return (
            all(_CIFAR_RESNET_KEY.fullmatch(k) for k in state)
            and _shape(state, "conv1.weight") == (16, 3, 3, 3)
            and _shape(state, "layer2.0.downsample.0.weight") == (32, 16, 1, 1)
            and _shape(state, "layer3.0.downsample.0.weight") == (64, 32, 1, 1)
            and _shape(state, "fc.weight") == (100, 64)
            and all(_blocks(state, f"layer{i}") == 9 for i in (1, 2, 3))
        )


class FairFaceResNet34(PublishedLayout):
    """FairFace's ResNet-34 (``res34_fair_align_multi_7_20190809.pt``, ``dchen236/FairFace``).

    A plain torchvision ResNet-34 state dict (``conv1.weight`` (64, 3, 7, 7), ``layer1``-``layer4`` of 3, 4,
    6 and 3 basic blocks, ``downsample.0``/``downsample.1`` in the first block of ``layer2``-``layer4``)
    whose classifier is ``fc`` = ``Linear(512, 18)``: rows 0-6 are the races White, Black, Latino_Hispanic,
    East Asian, Southeast Asian, Indian, Middle Eastern; rows 7-8 the genders Male, Female; rows 9-17 the
    age bins. :meth:`patch` keeps the rows of the target's classes, in the order of ``class_names`` (matched
    by name: case, ``_`` and ``-`` are ignored), which must be the 7 races or the 2 genders in any order;
    the result loads into ``torchvision.models.resnet34(num_classes=7 or 2)``. Without ``class_names`` the
    order of our FairFace loader (the head's own order) is assumed, chosen by the model's class count.
    """

    name = "fairface_res34_18way"
    models = ("resnet34",)
    summary = "FairFace's 18-way ResNet-34 (race, gender and age heads)"
    hint = (
        "torchvision ResNet-34 keys; FairFace's res34_fair_align_multi_7_20190809.pt has its 18-way fc "
        "cut to the race or gender classes"
    )

    def recognise(self, state: Mapping[str, Any]) -> bool:
        return (
            all(_TV_BASIC_RESNET_KEY.fullmatch(k) for k in state)
            and _shape(state, "conv1.weight") == (64, 3, 7, 7)
            and _shape(state, "fc.weight") == (_FAIRFACE_HEAD_ROWS, 512)
            and _shape(state, "fc.bias") == (_FAIRFACE_HEAD_ROWS,)
            and [_blocks(state, f"layer{i}") for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
        )

    def patch(
        self, state: StateDict, *, model: nn.Module, class_names: Sequence[str] | None, source: str
    ) -> StateDict:
        names = list(class_names) if class_names is not None else self._default_names(model, source)
        rows = fairface_head_rows(names)
        if rows is None:
            raise CheckpointError(
                f"checkpoint {source} is {self.summary}, but the class names {names} are neither its 7 "
                f"races ({', '.join(FAIRFACE_HEAD_RACES)}) nor its 2 genders "
                f"({', '.join(FAIRFACE_HEAD_GENDERS)}), in any order; use it with target race or gender"
            )
        index = torch.tensor(rows, dtype=torch.long)
        state["fc.weight"] = state["fc.weight"].index_select(0, index)
        state["fc.bias"] = state["fc.bias"].index_select(0, index)
        return state

    def _default_names(self, model: nn.Module, source: str) -> list[str]:
        classes = (model.fc.out_features,) if isinstance(getattr(model, "fc", None), nn.Linear) else None
        if classes is not None and classes[0] == len(FAIRFACE_HEAD_RACES):
            return list(FAIRFACE_HEAD_RACES)
        if classes is not None and classes[0] == len(FAIRFACE_HEAD_GENDERS):
            return list(FAIRFACE_HEAD_GENDERS)
        raise CheckpointError(
            f"checkpoint {source} is {self.summary}; it loads into a resnet34 with 7 (race) or 2 (gender) "
            f"classes, not one whose fc has shape {classes}"
        )


class TorchvisionMobileNetV2(PublishedLayout):
    """A torchvision MobileNetV2 state dict, e.g. the paper authors' ``mobilenet_v2_utkface_race.pt``
    (5 classes) and ``mobilenet_v2_utkface_gender.pt`` (2 classes).

    Keys ``features.0.0.weight`` (32, 3, 3, 3), ``features.0.1.*`` (BN), the inverted-residual blocks
    ``features.1`` - ``features.17`` (``features.<i>.conv.<j>...``), ``features.18.0.weight`` (1280, 320,
    1, 1) and ``features.18.1.*`` (BN, up to ``features.18.1.running_var``), and the classifier
    ``classifier.1.weight`` (classes, 1280) and ``classifier.1.bias``. Classes keep the file's order (for
    UTKFace the label codes: races White, Black, Asian, Indian, Others; genders Male, Female). It loads
    unchanged into ``torchvision.models.mobilenet_v2(num_classes=5 or 2)``, our ``mobilenet_v2`` with
    ``width`` 1.0.
    """

    name = "torchvision_mobilenet_v2"
    models = ("mobilenet_v2",)
    summary = "a torchvision MobileNetV2"
    hint = "torchvision MobileNetV2 keys such as features.18.1.running_var and classifier.1.weight"

    def recognise(self, state: Mapping[str, Any]) -> bool:
        head = _shape(state, "classifier.1.weight")
        return (
            all(_TV_MOBILENET_V2_KEY.fullmatch(k) for k in state)
            and _shape(state, "features.0.0.weight") == (32, 3, 3, 3)
            and _shape(state, "features.18.1.running_var") == (1280,)
            and head is not None
            and head[1:] == (1280,)
        )


LAYOUTS: tuple[PublishedLayout, ...] = (
    ChenyaofoCifar100ResNet56(),
    FairFaceResNet34(),
    TorchvisionMobileNetV2(),
)
"""The registry of published layouts, tried in order."""

_OTHER_HINTS = {
    "resnet56_option_a": "the option-A CIFAR ResNet-56: no downsample keys",
    "resnet18": "torchvision ResNet-18 keys",
    "mlp": "MLP keys such as 0.weight",
}


def _normalise(name: str) -> str:
    return " ".join(str(name).replace("_", " ").replace("-", " ").casefold().split())


def fairface_head_rows(class_names: Sequence[str]) -> list[int] | None:
    """Rows of the FairFace 18-way head for ``class_names`` (in that order), or None unless they are
    the 7 races or the 2 genders, each exactly once (names compared ignoring case, ``_`` and ``-``)."""
    names = [_normalise(n) for n in class_names]
    for head, first in ((FAIRFACE_HEAD_RACES, 0), (FAIRFACE_HEAD_GENDERS, _FAIRFACE_GENDER_ROW0)):
        rows = {_normalise(n): first + i for i, n in enumerate(head)}
        if sorted(names) == sorted(rows):
            return [rows[n] for n in names]
    return None


def recognise(state: Mapping[str, Any]) -> PublishedLayout | None:
    """The first layout of :data:`LAYOUTS` that recognises ``state``, or None."""
    return next((layout for layout in LAYOUTS if layout.recognise(state)), None)


def expected_format(model_name: str | None) -> str:
    """What a ``model.checkpoint`` for ``model_name`` must hold, for error messages."""
    if model_name is None:
        return "expected a state dict of the configured model or a dense.pt of a dense run"
    hints = [layout.hint for layout in LAYOUTS if model_name in layout.models]
    if model_name in _OTHER_HINTS:
        hints.append(_OTHER_HINTS[model_name])
    detail = f" ({'; '.join(hints)})" if hints else ""
    return f"expected a state dict of model {model_name!r}{detail} or a dense.pt of a dense run"


def describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> str | None:
    """The first missing and first unexpected key of ``state`` against ``expected`` (with counts), else
    the first key whose shape differs, else None."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            parts.append(f"{what} key {keys[0]!r}{more}")
    if parts:
        return ", ".join(parts)
    for key, tensor in expected.items():
        found = _shape(state, key)
        if found != tuple(tensor.shape):
            return f"key {key!r} has shape {found} in the file but {tuple(tensor.shape)} in the model"
    return None


def _strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    prefix = "module."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def adapt_state_dict(
    content: Any,
    model: nn.Module,
    *,
    model_name: str | None = None,
    class_names: Sequence[str] | None = None,
    source: str | Path = "<memory>",
) -> tuple[str, StateDict]:
    """``(layout name, state dict of model)`` from the loaded contents of a checkpoint file.

    ``content`` is a published state dict (see :data:`LAYOUTS`), a state dict of ``model``, or a
    checkpoint dict holding one under ``"model"`` (e.g. a ``dense.pt``; layout name :data:`OWN_FORMAT`).
    A ``module.`` prefix on every key (``DataParallel``) is stripped, and missing BN
    ``num_batches_tracked`` counters are taken from ``model``. ``model_name`` (one of our model names)
    checks that a published file is used with the model it was made for and words the messages;
    ``class_names`` is the target's class order (used by the FairFace head). Every problem is a one-line
    :class:`CheckpointError` naming ``source``.
    """
    expected = expected_format(model_name)
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(content).__name__}, not a state dict; {expected}"
        )
    own = isinstance(content.get("model"), Mapping)
    state = _strip_module_prefix(content["model"] if own else content)
    bad = next(
        ((k, v) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None
    )
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {source} is not a state dict (entry {bad[0]!r} holds a {type(bad[1]).__name__}, "
            f"not a tensor); {expected}"
        )

    target = model.state_dict()
    layout = None if own else recognise(state)
    name = OWN_FORMAT
    if layout is not None:
        if model_name is not None and model_name not in layout.models:
            detail = describe_mismatch(target, state) or "the keys match, but the file is not made for it"
            raise CheckpointError(
                f"checkpoint {source} does not match the model architecture ({detail}): it is "
                f"{layout.summary} (layout {layout.name}) for model {' or '.join(map(repr, layout.models))}, "
                f"not {model_name!r}; {expected}"
            )
        state = layout.patch(state, model=model, class_names=class_names, source=str(source))
        name = layout.name

    for key, tensor in target.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = tensor.clone()
    detail = describe_mismatch(target, state)
    if detail is not None:
        looks = f"; the file looks like {layout.summary} (layout {layout.name})" if layout is not None else ""
        raise CheckpointError(
            f"checkpoint {source} does not match the model architecture ({detail}){looks}; {expected}"
        )
    return name, state


__all__ = [
    "FAIRFACE_HEAD_GENDERS",
    "FAIRFACE_HEAD_RACES",
    "LAYOUTS",
    "OWN_FORMAT",
    "ChenyaofoCifar100ResNet56",
    "FairFaceResNet34",
    "PublishedLayout",
    "TorchvisionMobileNetV2",
    "adapt_state_dict",
    "describe_mismatch",
    "expected_format",
    "fairface_head_rows",
    "recognise",
]
