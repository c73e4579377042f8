-- recipes/quickstart.lua: a small ViT family trained with POA on Fashion-MNIST (32 px RGB
-- JPEGs from `poa data fashion-mnist`) on a CPU in minutes: widths 64..192 step 64 (2-6
-- heads of 32), depths 2..4 = 9 members, patch 8, 2 global 32 px crops (16 patches) and
-- 4 local 16 px crops (4 patches). Two small heads instead of the paper's four large ones.
-- LayerScale starts at 0.1, not the reference's 1e-5: with 1e-5 the CLS token is the same
-- for every image at first, the teacher's targets are uniform, and in a run this short the
-- heads settle on uniform outputs before the features differ (measured: DINO loss stuck at
-- log K); at 0.1 the targets carry information from the first step.
return {
  name = "quickstart",
  model = {
    family = "vit",
    patch_size = 8,
    head_dim = 32,
    width = { 64, 192, 64 },
    depth = { 2, 4, 1 },
    mlp_ratio = 4,
    layerscale = 0.1,
    drop_path_rate = 0.1,
    named = {},
  },
  global_crops = { count = 2, size = 32, scale = { 0.32, 1.0 } },
  local_crops = { count = 4, size = 16, scale = { 0.05, 0.32 } },
  heads = { prototypes = { 256, 512 }, hidden = 512, bottleneck = 128 },
  ibot = { activate_epochs = 1 },
  teacher = { momentum = 0.99, warmup_temp_epochs = 1 },
  optim = { epochs = 3, base_lr = 0.004, lr_rule = "sqrt_wrt_1024", warmup_epochs = 0.5,
            freeze_last_layer_epochs = 0.2, iter_num_scale = 1.0 },
  train = { batch_size = 64, official_epoch_length = 50, checkpoint_every = 100,
            output = "out/quickstart" },
  data = { train = "data/fashion-mnist/train", val = "data/fashion-mnist/val" },
}
