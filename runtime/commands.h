/* commands.h: the poa subcommands. Each returns the process exit status and
   prints its own errors (prefixed "poa <command>: "). */
#ifndef POA_COMMANDS_H
#define POA_COMMANDS_H

/* Exit statuses (README "Exit statuses"): the command line is wrong (usage), or the command
   failed (bad input, or a failure while running: the message names the file, field or cause). */
enum { POA_EXIT_OK = 0, POA_EXIT_USAGE = 1, POA_EXIT_FAILED = 2 };

int poa_command_list(int argc, char **argv);
int poa_command_forward(int argc, char **argv);
int poa_command_data(int argc, char **argv);
int poa_command_knn(int argc, char **argv);
int poa_command_linear(int argc, char **argv);
int poa_command_plot(int argc, char **argv);
int poa_command_train(int argc, char **argv);
int poa_command_cuda(int argc, char **argv);
int poa_command_export(int argc, char **argv);
int poa_command_program(int argc, char **argv);
int poa_command_pick(int argc, char **argv);

#endif
