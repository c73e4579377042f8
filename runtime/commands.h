/* commands.h: the poa subcommands. Each returns the process exit status and
   prints its own errors (prefixed "poa <command>: "). */
#ifndef POA_COMMANDS_H
#define POA_COMMANDS_H

int poa_command_list(int argc, char **argv);
int poa_command_forward(int argc, char **argv);
int poa_command_data(int argc, char **argv);
int poa_command_knn(int argc, char **argv);
int poa_command_linear(int argc, char **argv);
int poa_command_plot(int argc, char **argv);
int poa_command_train(int argc, char **argv);
int poa_command_cuda(int argc, char **argv);

#endif
