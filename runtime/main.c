/* main.c: the poa command line. Each subcommand lives in its own function; this file only
   dispatches, answers `poa help [command]`, `poa <command> --help` and `poa --version`, and is
   the one place that exits on an error. Exit statuses (README "Exit statuses"): 0 done,
   1 usage (the command line is wrong), 2 failed (bad input or a failure while running; the
   message on stderr names the file, field or cause). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"
#include "fashion_mnist.h"
#include "lua_sources.h"
#include "version.h"

typedef struct command {
    const char *name, *usage, *help;
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    { "list", "list <recipe.lua>                    every member: width, depth, heads, params, GFLOPs, p",
      "Every member of the recipe's family: width, depth, heads, parameters (M), GFLOPs, sampling\n"
      "replicas and probability, and the names of the family's named members (ViT-S, ...).\n",
      poa_command_list },
    { "forward",
      "forward <recipe.lua> --params P.safetensors --input X.safetensors --net WxD --out Y.safetensors\n"
      "                                           final-LayerNorm CLS and patch tokens of one member",
      "  --params P     the backbone under the reference's state-dict names, intact shapes,\n"
      "                 or a member's model.safetensors written by poa export\n"
      "  --input X      tensor \"images\" (B,3,S,S) and optional \"masks\" (B,patches) U8\n"
      "  --images NAME, --masks NAME   other tensor names in X\n"
      "  --net WxD      the member (WxD, W_D or a name: ViT-S, S, small)\n"
      "  --out Y        where the tokens are written\n"
      "  --threads N    OpenMP threads\n",
      poa_command_forward },
    { "program", "program <recipe.lua> --net WxD [--crop global|local] [--backward] [--device cpu|gpu] [--batch B]\n"
      "                                           the member's forward or backward program: steps, shapes, arena",
      "The forward of one member as the executor runs it (models/vit.lua's graph lowered by gen/):\n"
      "every step (GEMM with shapes, leading dimensions, alpha, beta; kernel with its buffers and\n"
      "scalars; copy) with its FLOPs, every value with its place in the arena (laid out by\n"
      "liveness) and the arena's size.\n"
      "  --net WxD      the member (WxD, W_D or a name: ViT-S, S, small)\n"
      "  --crop C       global (default) or local: the crop size the program is built for\n"
      "  --backward     the backward instead: gen/backward.lua's reverse mode over the graph, with\n"
      "                 the steps the recompute policy adds (GELU's g and the LayerNorms' y) marked\n"
      "  --device D     cpu (default) or gpu: the GPU schedule (gen/schedule.lua), the same graph with\n"
      "                 each residual add fused with the LayerNorm after it, and each kernel step's\n"
      "                 CUDA launches (grid and block) listed under it\n"
      "  --precision P  with --device gpu: bf16 (default, as poa train) for bf16 GEMM operands (casts\n"
      "                 to_bf16 before the GEMMs, weights from the bf16 shadow, bias by the GEMM's\n"
      "                 epilogue) or fp32\n"
      "  --batch B      evaluate sizes at batch B (default: symbolic in B)\n",
      poa_command_program },
    { "train", "train <recipe.lua> [section.field=value ...] [--resume PATH|auto] [--init FILE] [--steps N]\n"
      "                                           the POA tri-branch training run (checkpoints, metrics)",
      "  section.field=value   override any recipe field (optim.base_lr=0.001, train.elastic=false)\n"
      "  --resume PATH|auto    continue from a checkpoint (auto: the newest in train.output)\n"
      "  --init FILE           start student and teacher from a state dict under the official POA\n"
      "                        names (backbone.*, dino_head.*) instead of the recipe's initialisation\n"
      "  --steps N             run at most N steps now\n"
      "  --device auto|cpu|gpu, --precision bf16|fp32   where the step runs (auto: a GPU if any)\n"
      "Progress on stdout every train.log_every steps (redrawn on a terminal, one line each in a\n"
      "log), metrics in <train.output>/metrics.jsonl, checkpoints every train.checkpoint_every\n"
      "steps, at the end and on SIGINT/SIGTERM. Several processes (torchrun or Slurm variables)\n"
      "train data parallel.\n",
      poa_command_train },
    { "data", "data fashion-mnist [--out DIR] [--size N] [--limit N]\n"
      "                                           Fashion-MNIST as a JPEG folder tree (default 32 px)",
      "  --out DIR      the tree (default data/fashion-mnist): DIR/train/<class>/, DIR/val/<class>/\n"
      "  --size N       image size in pixels (default 32)\n"
      "  --limit N      only the first N images of each split\n"
      "  --source DIR   the IDX files (default " POA_FASHION_MNIST_SOURCE ")\n",
      poa_command_data },
    { "knn", "knn <checkpoint> --data DIR [--recipe R.lua] [--nets all|S,B,L|WxD,...] [--train-limit N]\n"
      "      [--val-limit N] [--out DIR] [--threads N] [--baselines LIST] [--init FILE]\n"
      "                                           weighted k-NN of members beside the raw pixels and\n"
      "                                           the members at initialisation: table and figures",
      "  --data DIR         an ImageFolder tree with train/ and val/\n"
      "  --recipe R.lua     the recipe (default: the one recorded in the checkpoint)\n"
      "  --nets LIST        all, named members (S,B,L) or WxD,... (default all)\n"
      "  --train-limit N, --val-limit N   evenly spaced subsets of the splits\n"
      "  --batch N, --threads N           forward batch and OpenMP threads\n"
      "  --out DIR          knn.csv, knn.md and the figures (heatmap, accuracy against params/GFLOPs)\n"
      "  --baselines LIST   pixels,init (default), pixels, init or none: the same k-NN on the raw\n"
      "                     pixels as fed to the network, and on each member at initialisation\n"
      "  --init FILE        the members at initialisation from FILE's backbone (a step-0\n"
      "                     checkpoint, a `poa train --init` file) instead of the recipe's (train.seed)\n",
      poa_command_knn },
    { "linear", "linear <checkpoint> --data DIR [--recipe R.lua] [--nets all|S,B,L|WxD,...] [--epochs N]\n"
      "      [--batch N] [--augment yes|no] [--out DIR]   linear probe of members (52 classifiers each)",
      "  --data DIR         an ImageFolder tree with train/ and val/\n"
      "  --recipe R.lua     the recipe (default: the one recorded in the checkpoint)\n"
      "  --nets LIST        all, named members (S,B,L) or WxD,... (default all)\n"
      "  --epochs N, --batch N   the classifiers' training (default 10 epochs of 256)\n"
      "  --augment yes|no   random resized crop and flip, features again every epoch (default yes);\n"
      "                     no: features once per member\n"
      "  --train-limit N, --val-limit N   evenly spaced subsets of the splits\n"
      "  --out DIR          linear.csv, linear_grid.csv (every classifier), linear.md and the figures\n",
      poa_command_linear },
    { "plot", "plot <knn.csv|linear.csv> [<second.csv>] [--labels A,B] [--out DIR]\n"
      "                                           heatmap and accuracy against params/GFLOPs (SVG, PNG)",
      "  <knn.csv|linear.csv>   an evaluation's table: its figures drawn again\n"
      "  <second.csv>           a second table overlaid (POA against the same members trained alone)\n"
      "  --labels A,B           the two tables' names in the legend\n"
      "  <run dir>              a training run's curves from its metrics.jsonl (loss terms, lr, k-NN)\n"
      "  --out DIR              where the SVG and PNG files go\n",
      poa_command_plot },
    { "pick", "pick <recipe> --max-params N | --max-gflops F | --max-latency MS [--knn knn.csv]\n"
      "                                           the members that fit a budget, the Pareto front marked",
      "  --max-params N     at most N parameters (5000000, 5M)\n"
      "  --max-gflops F     at most F GFLOPs (forward multiply-accumulates of one global-crop image, as poa list)\n"
      "  --max-latency MS   at most MS milliseconds: each member's exported C program (poa export --what c)\n"
      "                     is built with make and cc and timed on this machine (needs --checkpoint C;\n"
      "                     --batch B (1), --threads T (1), --runs N (20: the median), --work DIR (kept))\n"
      "  --knn knn.csv      a table of poa knn: each member's top-1 (at --k K, default 20); the Pareto front\n"
      "                     (no member at most as costly and at least as accurate, better in one) marked *\n",
      poa_command_pick },
    { "export", "export <checkpoint> --net WxD|name --out DIR [--recipe R.lua] [--what weights|c|cuda|all]\n"
      "       [--sizes S,S] [--names timm|dinov2] [--heads] [--student]\n"
      "                                           one member as a plain network: safetensors for timm,\n"
      "                                           a standalone C (CUDA) program",
      "  --net WxD|name     the member (WxD, W_D or a name of the family: ViT-S, S, small)\n"
      "  --out DIR          DIR/model.safetensors (alpha baked in, the member's blocks renumbered,\n"
      "                     the final LayerNorm included; recipe, member, step, mean/std in its\n"
      "                     metadata) and DIR/config.json for timm.create_model(\"local-dir:DIR\")\n"
      "  --recipe R.lua     the recipe (default: the one recorded in the checkpoint, with its overrides)\n"
      "  --what weights     what to export: the weights (default); c: the weights and the member's forward\n"
      "                     as a standalone C program (poa_member.h/.c, main.c, Makefile: `make -C DIR`\n"
      "                     builds ./poa_member with cc and libm; OpenMP and OpenBLAS when found);\n"
      "                     cuda: the same with poa_member.cu (the CUDA runtime and cuBLASLt; `make -C DIR`\n"
      "                     builds ./poa_member_cuda with nvcc); all: both programs\n"
      "  --sizes S,S        with a program: the image sizes it takes (default: the recipe's\n"
      "                     global and local crop sizes)\n"
      "  --names timm       timm's VisionTransformer names (default); dinov2: DINOv2's (adds mask_token)\n"
      "  --heads            also DIR/heads.safetensors: the heads sliced like the backbone\n"
      "  --student          from the student (default: the teacher)\n"
      "`poa forward <recipe> --params DIR/model.safetensors --net WxD` runs the exported member.\n",
      poa_command_export },
    { "cuda", "cuda info | warm <recipe.lua> | report <recipe.lua> [--arch sm_XX] [--jobs N]\n"
      "                                           the GPU, NVRTC kernel cache warm-up, registers/spills",
      "  info                   the GPU seen (or why none), NVRTC, the kernel cache ($POA_CACHE)\n"
      "  warm <recipe.lua>      compile every kernel a GPU run of the family loads into the cache\n"
      "  report <recipe.lua>    ptxas registers and spills of each kernel\n"
      "  plan <recipe.lua> [--batch B] [--precision bf16|fp32] [section.field=value ...]\n"
      "                         the device memory one GPU training step allocates\n"
      "  --arch sm_XX, --jobs N   target architecture (default: the GPU's, else sm_90), threads\n",
      poa_command_cuda },
};
enum { command_count = sizeof commands / sizeof commands[0] };

static void usage(FILE *to) {
    fprintf(to, "usage: poa <command> [arguments]\n\ncommands:\n");
    for (int i = 0; i < command_count; i++) fprintf(to, "  %s\n", commands[i].usage);
    fprintf(to, "\n`poa help <command>` tells more; `poa --version` describes this build.\n");
}

static const command *find(const char *name) {
    for (int i = 0; i < command_count; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

static int help(const char *name) {
    if (!name) {
        usage(stdout);
        return POA_EXIT_OK;
    }
    const command *c = find(name);
    if (!c) {
        fprintf(stderr, "poa help: unknown command '%s'\n\n", name);
        usage(stderr);
        return POA_EXIT_USAGE;
    }
    printf("usage: poa %s\n\n%s", c->usage, c->help);
    return POA_EXIT_OK;
}

/* The build (git describe, compiler and libraries), where the Lua comes from, and what
   `poa cuda info` sees: the GPU and NVRTC, found or not. */
static int version(void) {
    char lua[1200];
    poa_lua_sources_describe(lua, sizeof lua);
    char blas[400];
    poa_blas_describe(blas, sizeof blas);
    printf("poa %s\nbuild: %s\nLua sources: %s\nBLAS: %s\n", poa_version, poa_build_options, lua,
           blas);
    fflush(stdout);
    char *info[] = { "cuda", "info", NULL };
    return poa_command_cuda(2, info);
}

int main(int argc, char **argv) {
    poa_choose_library_settings(argv);
    if (argc < 2) {
        usage(stderr);
        return POA_EXIT_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "--version") == 0 || strcmp(first, "version") == 0) return version();
    if (strcmp(first, "help") == 0 || strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0)
        return help(argc > 2 ? argv[2] : NULL);
    const command *c = find(first);
    if (!c) {
        fprintf(stderr, "poa: unknown command '%s'\n\n", first);
        usage(stderr);
        return POA_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return help(first);
    return c->run(argc - 1, argv + 1);
}
