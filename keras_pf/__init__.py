"""keras_pf: the networks of "Learning Features with Parameter-Free Layers" (Han et al.,
ICLR 2022) for Keras 3, with the original ImageNet checkpoints."""

from keras_pf.imagenet import decode_predictions, preprocess_input
from keras_pf.inference import fold_batchnorm
from keras_pf.pf_pit import PFPiT, PFPiTBase, PFPiTSmall, PFPiTTiny
from keras_pf.pf_resnet import PFResNet, PFResNet50, PFResNet50Hybrid, PFResNet50Max, PFResNet50Plain
from keras_pf.pf_vit import PFViT, PFViTBase, PFViTSmall, PFViTTiny
from keras_pf.transfer import feature_layers, feature_pyramid, freeze_backbone, set_backbone_trainable
from keras_pf.weights import load_torch_weights

__version__ = "0.1.0"

# Every named constructor by name: the CLI, the tools and the tests read this.
MODELS = {
    "PFResNet50": PFResNet50,
    "PFResNet50Hybrid": PFResNet50Hybrid,
    "PFResNet50Max": PFResNet50Max,
    "PFResNet50Plain": PFResNet50Plain,
    "PFViTTiny": PFViTTiny,
    "PFViTSmall": PFViTSmall,
    "PFViTBase": PFViTBase,
    "PFPiTTiny": PFPiTTiny,
    "PFPiTSmall": PFPiTSmall,
    "PFPiTBase": PFPiTBase,
}
