/* cli.c: option parsing and --help text from a table of CliOpt. */
#include "base/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/check.h"

static void print_help(const char *prog, const char *synopsis, const CliOpt *o, int n) {
    const char *base = strrchr(prog, '/');
    printf("usage: %s [options]\n\n%s\n\noptions:\n", base ? base + 1 : prog, synopsis);
    for (int i = 0; i < n; i++) {
        char def[128] = "";
        switch (o[i].type) {
        case CLI_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o[i].dst); break;
        case CLI_FLOAT: snprintf(def, sizeof def, " (default %g)", (double)*(float *)o[i].dst); break;
        case CLI_STRING:
            if (*(const char **)o[i].dst)
                snprintf(def, sizeof def, " (default %s)", *(const char **)o[i].dst);
            break;
        case CLI_FLAG: break;
        }
        printf("  --%-22s %s%s\n", o[i].name, o[i].help, def);
    }
    printf("  --%-22s %s\n", "help", "print this text and exit");
}

int cli_parse(int argc, char **argv, const char *synopsis, const CliOpt *opts, int nopts) {
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help(argv[0], synopsis, opts, nopts);
            return 1;
        }
        CS_CHECK(!strncmp(arg, "--", 2), "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const CliOpt *o = NULL;
        for (int i = 0; i < nopts; i++)
            if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len)) o = &opts[i];
        CS_CHECK(o, "unknown option '%s' (see --help)", arg);
        if (o->type == CLI_FLAG) {
            CS_CHECK(!eq, "option --%s takes no value", o->name);
            *(int *)o->dst = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        CS_CHECK(val, "option --%s needs a value", o->name);
        char *end = NULL;
        errno = 0;
        if (o->type == CLI_INT) {
            long v = strtol(val, &end, 10);
            CS_CHECK(!errno && end != val && !*end && v >= -2147483647L && v <= 2147483647L,
                     "option --%s wants an integer, got '%s'", o->name, val);
            *(int *)o->dst = (int)v;
        } else if (o->type == CLI_FLOAT) {
            float v = strtof(val, &end);
            CS_CHECK(!errno && end != val && !*end, "option --%s wants a number, got '%s'",
                     o->name, val);
            *(float *)o->dst = v;
        } else {
            *(const char **)o->dst = val;
        }
    }
    return 0;
}
