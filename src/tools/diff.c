/* diff.c — placeholder, written next. */
#include "tools/tools.h"

int tools_diff_main(int argc, char **argv)
{
    return DIFF_ERROR;
}
