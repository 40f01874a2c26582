/* cli.h: table-driven command-line options for the stages, with generated --help. */
#ifndef CLIPSELF_CLI_H
#define CLIPSELF_CLI_H

typedef enum { CLI_INT, CLI_FLOAT, CLI_STRING, CLI_FLAG } CliType;

typedef struct {
    const char *name;  /* without the leading "--" */
    CliType type;
    void *dst;         /* int*, float*, const char**, int* (flag set to 1) */
    const char *help;  /* one line; the default is printed from *dst */
} CliOpt;

/* Parse argv. Returns 0 to go on, 1 when --help was printed (exit 0), -1 on a bad option
 * (the message says which and how to get help). */
int cli_parse(int argc, char **argv, const char *synopsis, const CliOpt *opts, int nopts);

#endif
