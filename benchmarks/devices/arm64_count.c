/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * pocketml's instruction counter for qemu-user (aarch64 guests). It is built on the user's machine by
 * `pocketml device setup arm64` against the qemu-plugin.h of the installed qemu, which is
 * GPL-2.0-or-later; this file therefore carries that licence, apart from pocketml's Apache-2.0 code.
 *
 * It counts executed guest instructions only inside regions the guest marks with a syscall that no
 * kernel has: syscall(MARK_SYSCALL, MARK_MAGIC, 1) opens a region, syscall(MARK_SYSCALL, MARK_MAGIC, 0)
 * closes it and appends one line "total simd dot" to the file given as out=PATH. Counts are added
 * inline per translated block (precomputed per block), so the counting costs little emulation time.
 * One guest thread is assumed inside a region (inline adds are not atomic).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 0x7e57
#define MARK_MAGIC 0x706f636b65746d6cULL /* "pocketml" */

static uint64_t total, simd, dot;        /* executed since start, all classes */
static uint64_t open_total, open_simd, open_dot; /* the counters when the open region began */
static int region_open;
static FILE *out;

/* A64 "data processing: scalar floating point and Advanced SIMD" (op0 = x111). */
static int is_simd(uint32_t insn)
{
    return (insn & 0x0E000000u) == 0x0E000000u;
}

/* Integer dot product and matrix multiply-accumulate: SDOT/UDOT (vector and by element), USDOT,
 * SMMLA/UMMLA/USMMLA. */
static int is_dot(uint32_t insn)
{
    return (insn & 0x9FE0FC00u) == 0x0E809400u      /* SDOT/UDOT vector */
        || (insn & 0x9FC0F400u) == 0x0F80E000u      /* SDOT/UDOT by element */
        || (insn & 0xBFE0FC00u) == 0x0E809C00u      /* USDOT vector */
        || (insn & 0xDFE0F400u) == 0x4E80A400u;     /* SMMLA/UMMLA/USMMLA */
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t n_simd = 0, n_dot = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        if (qemu_plugin_insn_size(insn) == 4) {
            memcpy(&word, qemu_plugin_insn_data(insn), 4);
        }
        n_simd += is_simd(word);
        n_dot += is_dot(word);
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    if (n_simd) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &simd, n_simd);
    }
    if (n_dot) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &dot, n_dot);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != MARK_SYSCALL || a1 != MARK_MAGIC) {
        return;
    }
    if (a2) {
        open_total = total, open_simd = simd, open_dot = dot;
        region_open = 1;
    } else if (region_open) {
        fprintf(out, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", total - open_total, simd - open_simd, dot - open_dot);
        fflush(out);
        region_open = 0;
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL || (out = fopen(path, "w")) == NULL) {
        fprintf(stderr, "pocketml counter: give a writable out=PATH\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
