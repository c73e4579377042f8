-- recipes/fashion_mnist.lua: a narrow ViT family trained with POA on Fashion-MNIST (32 px
-- JPEGs from `poa data fashion-mnist`) for about 48 minutes on 2 cores (issue 13; README,
-- "Results at small scale"). Widths 64 and 96 (2 and 3 heads of 32) x depths 2..4 = 6 members,
-- patch 8 (16 patches of a 32 px crop: per CPU-second patch 8 learned faster here than patch 4
-- at 32 or 24 px). The rest is `extends = "quickstart"` (LayerScale 1.0, a sharp teacher at
-- 0.02, 64 / 128 prototypes, no blur or solarize: see recipes/quickstart.lua), on a schedule of
-- 12,000 steps of 64 images (12.8 epochs of the 60,000): 120 "epochs" of 100 steps, of which 5
-- warm up the learning rate and the teacher's temperature, and a teacher momentum of
-- 0.99 -> 0.998. lambda = 0.5 weights the elastic student's terms 0.5 instead of the paper's 0.2.
-- The quickstart's crops (global scale 0.5-1, local 0.2-0.5): on a 2,000-step probe of this
-- recipe every member gained 1.2-2.0 points of k-NN over the reference's 0.32-1 and 0.05-0.32;
-- drop path 0 and lambda 0.3 changed nothing.
return {
  extends = "quickstart",
  name = "fashion_mnist",
  model = { width = { 64, 96, 32 } },
  loss = { lambda = 0.5 },
  teacher = { momentum = 0.99, final_momentum = 0.998, warmup_temp_epochs = 5 },
  optim = { epochs = 120, warmup_epochs = 5, freeze_last_layer_epochs = 1 },
  train = { official_epoch_length = 100, checkpoint_every = 1000, output = "out/fashion_mnist" },
}
