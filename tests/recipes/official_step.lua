-- tests/recipes/official_step.lua: the family and configuration of the recorded official step
-- (../shared/reference/official-step/README.md, meta.json `cfg`; tests/c/test_official_step.c):
-- widths 64..128 step 32, head dim 32, depths 2..4, patch 8, LayerScale 1e-5, 2 x 32 px global
-- and 4 x 16 px local crops of 4 images, 2 heads (256 and 512 prototypes, hidden 256,
-- bottleneck 64), iBOT on; every other field is the official ViT config (gen/training.lua's
-- defaults). The dp02 recording sets model.drop_path_rate=0.2.
return {
  name = "official_step",
  model = {
    family = "vit", patch_size = 8, head_dim = 32, width = { 64, 128, 32 }, depth = { 2, 4, 1 },
    mlp_ratio = 4, layerscale = 1e-5, drop_path_rate = 0.0, net_select_scale = 3, named = {},
  },
  global_crops = { count = 2, size = 32, scale = { 0.32, 1.0 } },
  local_crops = { count = 4, size = 16, scale = { 0.05, 0.32 } },
  heads = { prototypes = { 256, 512 }, hidden = 256, bottleneck = 64 },
  train = { batch_size = 4, official_epoch_length = 800, seed = 3, output = "build/tests/official_step" },
}
