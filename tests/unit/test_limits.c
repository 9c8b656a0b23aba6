/*
 * test_limits.c — the overload state of src/listener/limits.c: entered when
 * a measure is past its limit, left only below 90 % of it (hysteresis), and
 * off with a limit of 0; the memory measure is the process's real RSS.
 */
#include <stdint.h>

#include "config/config-t.h"
#include "listener/listener.h"
#include "test.h"

/* The overload bits after `conns` open connections with overload.connections = limit. */
static unsigned after_conns(struct listener_set *set, struct config *cfg, unsigned conns)
{
    set->_conns = conns;
    listener_set_check_overload(set, cfg);
    return listener_set_overload(set) & LISTENER_OVERLOAD_CONNECTIONS;
}

static void test_connections_hysteresis(void)
{
    TEST_CASE("overload.connections: past the limit, then below 90 %");
    struct listener_set set = {0};
    struct config cfg = {0};
    cfg.overload.connections = 2;
    CHECK(after_conns(&set, &cfg, 2) == 0); /* at the limit is not past it */
    CHECK(after_conns(&set, &cfg, 3) != 0);
    CHECK(after_conns(&set, &cfg, 2) != 0); /* 2 is not below 1.8 */
    CHECK(after_conns(&set, &cfg, 1) == 0);
    CHECK(after_conns(&set, &cfg, 2) == 0); /* and it stays off until past again */

    cfg.overload.connections = 10;
    CHECK(after_conns(&set, &cfg, 11) != 0);
    CHECK(after_conns(&set, &cfg, 9) != 0); /* 9 is 90 %: not below it */
    CHECK(after_conns(&set, &cfg, 8) == 0);

    cfg.overload.connections = 25; /* 90 % = 22.5 */
    CHECK(after_conns(&set, &cfg, 26) != 0);
    CHECK(after_conns(&set, &cfg, 23) != 0);
    CHECK(after_conns(&set, &cfg, 22) == 0);

    TEST_CASE("overload.connections: 0 is off, and turning it off ends the state");
    cfg.overload.connections = 1;
    CHECK(after_conns(&set, &cfg, 5) != 0);
    cfg.overload.connections = 0;
    CHECK(after_conns(&set, &cfg, 5) == 0);
    CHECK(after_conns(&set, &cfg, 1000000) == 0);
}

static void test_memory(void)
{
    TEST_CASE("overload.memory: the resident set against the limit");
    struct listener_set set = {0};
    struct config cfg = {0};
    cfg.overload.memory = 1; /* any process is past one byte */
    listener_set_check_overload(&set, &cfg);
    CHECK(listener_set_overload(&set) == LISTENER_OVERLOAD_MEMORY);
    cfg.overload.memory = UINT64_MAX / 2; /* far below 90 % of it */
    listener_set_check_overload(&set, &cfg);
    CHECK(listener_set_overload(&set) == 0);
    cfg.overload.memory = 1;
    listener_set_check_overload(&set, &cfg);
    CHECK(listener_set_overload(&set) == LISTENER_OVERLOAD_MEMORY);
    cfg.overload.memory = 0;
    listener_set_check_overload(&set, &cfg);
    CHECK(listener_set_overload(&set) == 0);
}

void test_limits_suite(void)
{
    test_connections_hysteresis();
    test_memory();
}
