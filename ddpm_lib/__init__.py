"""ddpm_lib: the small library behind *Diffusion Models, Step by Step*.

Every chapter notebook does ``import ddpm_lib as dl``. The modules follow the
chapters in order (see ``DESIGN.md`` in the repository):

========================  =====================================================
``dl.schedules``          noise schedules (chapter 3)
``dl.forward``            the forward process q(x_t | x_0) and its posterior (ch. 4)
``dl.targets``            eps / x0 / v targets, conversions, weightings, EDM (ch. 6)
``dl.losses``             ``diffusion_loss`` (chapters 2 and 6)
``dl.models``             ``BasicUNet``, ``UNet``, ``DiT`` (chapter 5)
``dl.samplers``           ``sample`` and every sampler (chapters 4 and 7)
``dl.toy``                Gaussian mixtures with exact scores (chapters 4 and 7)
``dl.data``               ``load_images`` (chapters 2 and 10)
``dl.train``              ``TrainConfig`` and ``Trainer`` (chapters 2 and 10)
``dl.evaluate``           Frechet distance, FID/KID, the MNIST classifier (ch. 9)
``dl.pipelines``          diffusers export and ``load_pretrained`` (chapters 1, 10)
``dl.viz``                plots and animations (every chapter)
``dl.widgets``            ipywidgets explorers (chapter 3; imported lazily)
``dl.book``               ``setup(chapter)``: profile, device, seed and sizes
========================  =====================================================
"""

from importlib import import_module as _import_module

from . import book
from .modelcall import call_model  # noqa: F401
from .schedules import *  # noqa: F401,F403
from .forward import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .toy import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
from .evaluate import *  # noqa: F401,F403
from .pipelines import *  # noqa: F401,F403
from .viz import *  # noqa: F401,F403

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``dl.widgets`` needs ipywidgets; import it only when a notebook asks for it.
    if name == "widgets":
        return _import_module(".widgets", __name__)
    raise AttributeError(f"module 'ddpm_lib' has no attribute {name!r}")
