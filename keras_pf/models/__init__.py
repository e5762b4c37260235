"""The networks: one generic builder per family (`pf_resnet.PFResNet`, `pf_vit.PFViT`,
`pf_pit.PFPiT`) with thin named constructors, the keras.applications conventions they
share (`application`: arguments, input, head, weights), the layers (`layers`: the
parameter-free pool, position embedding, LayerNorm), ImageNet pre/post-processing,
transfer learning (`transfer`), BatchNorm folding (`inference`), Grad-CAM, and the model
resolver (`resolve`). To change a network, edit its family module; to add a named model,
add a constructor there and its name to `resolve.MODEL_NAMES`."""
