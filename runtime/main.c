/* main.c: the poa command line. Each subcommand lives in its own function;
   this file only dispatches and is the one place that exits on an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

typedef struct command {
    const char *name, *usage;
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    { "list", "list <recipe.lua>                    every member: width, depth, heads, params, GFLOPs, p",
      poa_command_list },
    { "forward",
      "forward <recipe.lua> --params P.safetensors --input X.safetensors --net WxD --out Y.safetensors\n"
      "                                           final-LayerNorm CLS and patch tokens of one member",
      poa_command_forward },
    { "train", "train <recipe.lua> [section.field=value ...] [--resume PATH|auto] [--steps N]\n"
      "                                           the POA tri-branch training run (checkpoints, metrics)",
      poa_command_train },
    { "data", "data fashion-mnist [--out DIR] [--size N] [--limit N]\n"
      "                                           Fashion-MNIST as a JPEG folder tree (default 32 px)",
      poa_command_data },
    { "knn", "knn <checkpoint> --data DIR [--recipe R.lua] [--nets all|S,B,L|WxD,...] [--train-limit N]\n"
      "      [--val-limit N] [--out DIR] [--threads N]   weighted k-NN of members: table and heatmap",
      poa_command_knn },
    { "linear", "linear <checkpoint> --data DIR [--recipe R.lua] [--nets all|S,B,L|WxD,...] [--epochs N]\n"
      "      [--batch N] [--augment yes|no] [--out DIR]   linear probe of members (52 classifiers each)",
      poa_command_linear },
    { "plot", "plot <knn.csv|linear.csv> [<second.csv>] [--labels A,B] [--out DIR]\n"
      "                                           heatmap and accuracy against params/GFLOPs (SVG, PNG)",
      poa_command_plot },
    { "cuda", "cuda info | warm <recipe.lua> | report <recipe.lua> [--arch sm_XX] [--jobs N]\n"
      "                                           the GPU, NVRTC kernel cache warm-up, registers/spills",
      poa_command_cuda },
};

static void usage(FILE *to) {
    fprintf(to, "usage: poa <command> [arguments]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(to, "  %s\n", commands[i].usage);
}

/* OpenMP threads that spin at barriers starve the loader's threads and each other on a
   small machine (measured on the quickstart: 8 img/s spinning, 46 img/s passive). libgomp
   reads OMP_WAIT_POLICY once at load time, so when the user has not chosen one, poa sets
   PASSIVE and re-executes itself once. */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv); /* on failure, go on as we are */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "poa: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
