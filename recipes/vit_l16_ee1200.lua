-- recipes/vit_l16_ee1200.lua: the paper's ViT-L/16 run (reference §0, vit_ee1200.yaml):
-- 143 members, widths 384..1024 step 64, depths 12..24, 2 x 224 + 8 x 96 crops.
return {
  name = "vit_l16_ee1200",
  model = {
    family = "vit",
    patch_size = 16,
    head_dim = 64,
    width = { 384, 1024, 64 },
    depth = { 12, 24, 1 },
    mlp_ratio = 4,
    layerscale = 1e-5,
    drop_path_rate = 0.2,
    net_select_scale = 3,
  },
  global_crops = { count = 2, size = 224, scale = { 0.32, 1.0 } },
  local_crops = { count = 8, size = 96, scale = { 0.05, 0.32 } },
  -- Training fields (heads, losses, optimizer, schedules) are completed by the training issue.
  train = {
    batch_size_per_gpu = 50,
    gpus = 32,
    official_epoch_length = 800,
    epochs = 346,
  },
}
