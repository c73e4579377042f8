-- tests/recipes/tiny_vit.lua: the golden-test family. Small enough that full
-- gradients of every parameter fit in small fixtures: widths 32..96 step 32
-- (1-3 heads of 32), depths 2..4, patch 8, 32 px global and 16 px local crops
-- (16 and 4 patches: the local crops exercise the bicubic pos-embed resampling).
return {
  name = "tiny_vit",
  model = {
    family = "vit",
    patch_size = 8,
    head_dim = 32,
    width = { 32, 96, 32 },
    depth = { 2, 4, 1 },
    mlp_ratio = 4,
    layerscale = 1e-5,
    drop_path_rate = 0.1,
    net_select_scale = 3,
    named = {},
  },
  global_crops = { count = 2, size = 32, scale = { 0.32, 1.0 } },
  local_crops = { count = 4, size = 16, scale = { 0.05, 0.32 } },
}
