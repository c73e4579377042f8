-- tests/recipes/tiny_train.lua: the tiny golden family with small heads, for step tests:
-- widths 32..96 step 32, depths 2..4, patch 8, 2 x 32 px global and 2 x 16 px local crops.
return {
  name = "tiny_train",
  model = {
    family = "vit", patch_size = 8, head_dim = 32, width = { 32, 96, 32 }, depth = { 2, 4, 1 },
    mlp_ratio = 4, layerscale = 0.1, drop_path_rate = 0.1, named = {},
  },
  global_crops = { count = 2, size = 32, scale = { 0.32, 1.0 } },
  local_crops = { count = 2, size = 16, scale = { 0.05, 0.32 } },
  heads = { prototypes = { 24, 40 }, hidden = 32, bottleneck = 16 },
  ibot = { activate_epochs = 0 },
  optim = { epochs = 1, warmup_epochs = 0, iter_num_scale = 1.0 },
  train = { batch_size = 4, official_epoch_length = 10, seed = 3, output = "build/tests/tiny_train" },
}
