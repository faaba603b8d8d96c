/*
 * A spreadsheet's extent (furthest valued cell, merged area), read from its raw data: the
 * two hot loops of batchjob/input/bounds.py, which stays the reference (and the fallback
 * without a C compiler). tests/input/test_bounds.py compares both on generated and mutated
 * input; scripts/sanitize runs that under ASan + UBSan.
 *
 * xlsx_scan(chunk, state) -> state
 *     One piece of a worksheet's XML (ending at a '>'); state is
 *     (row, col, rows, cols, merged), as bounds.xlsx_sheet_extent keeps it. Mirrors its
 *     regular expressions exactly:
 *       tag    <(?:\w+:)?(row|c|mergeCell)\b([^>]*)>
 *       r      \br\s*=\s*["']([A-Za-z]{0,3})([0-9]{1,9})["']
 *       ref    \bref\s*=\s*["']\$?L{1,3}\$?D{1,9}:\$?L{1,3}\$?D{1,9}["']
 * biff_extent(data, offset) -> (rows, cols, merged)
 *     One sheet's substream of a BIFF8 Workbook stream, from its BOF at `offset`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SAT_MAX ((long long)1 << 60) /* merged cells saturate here: far past any limit */

static int is_word(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}
static int is_alpha(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_quote(unsigned char c) { return c == '"' || c == '\''; }

static long long sat_add(long long a, long long b) { return (a > SAT_MAX - b) ? SAT_MAX : a + b; }

/* Column letters as bounds._column computes them (upper-cased, base 26). */
static long long column_of(const unsigned char *s, Py_ssize_t n) {
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'a' && c <= 'z') c = (unsigned char)(c - 32);
        v = v * 26 + (c - 64);
    }
    return v;
}

/* At a[i]: `name\s*=\s*["']`; returns the index after the quote, or -1. */
static Py_ssize_t attr_open(const unsigned char *a, Py_ssize_t n, Py_ssize_t i, const char *name) {
    Py_ssize_t k = (Py_ssize_t)strlen(name);
    if (i + k > n || memcmp(a + i, name, (size_t)k) != 0) return -1;
    if (i > 0 && is_word(a[i - 1])) return -1; /* \b before the name */
    i += k;
    while (i < n && is_space(a[i])) i++;
    if (i >= n || a[i] != '=') return -1;
    i++;
    while (i < n && is_space(a[i])) i++;
    if (i >= n || !is_quote(a[i])) return -1;
    return i + 1;
}

/* Letters {lo,hi} then digits {1,9} at a[*i]; advances *i. */
static int cell_ref(const unsigned char *a, Py_ssize_t n, Py_ssize_t *i, int lo, int hi, int dollars,
                    Py_ssize_t *l0, Py_ssize_t *ln, long long *row) {
    Py_ssize_t j = *i;
    if (dollars && j < n && a[j] == '$') j++;
    Py_ssize_t s = j;
    while (j < n && is_alpha(a[j]) && j - s < hi) j++;
    if (j - s < lo) return 0;
    *l0 = s;
    *ln = j - s;
    if (dollars && j < n && a[j] == '$') j++;
    Py_ssize_t d = j;
    long long v = 0;
    while (j < n && is_digit(a[j]) && j - d < 9) v = v * 10 + (a[j++] - '0');
    if (j == d) return 0;
    *row = v;
    *i = j;
    return 1;
}

/* The first match of the r pattern in attrs: 1 and (letters, row), or 0. */
static int find_r(const unsigned char *a, Py_ssize_t n, Py_ssize_t *l0, Py_ssize_t *ln, long long *row) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != 'r') continue;
        Py_ssize_t j = attr_open(a, n, i, "r");
        if (j < 0) continue;
        if (cell_ref(a, n, &j, 0, 3, 0, l0, ln, row) && j < n && is_quote(a[j])) return 1;
    }
    return 0;
}

static long long find_ref_area(const unsigned char *a, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != 'r') continue;
        Py_ssize_t j = attr_open(a, n, i, "ref");
        if (j < 0) continue;
        Py_ssize_t l0, ln, m0, mn;
        long long r1, r2;
        if (!cell_ref(a, n, &j, 1, 3, 1, &l0, &ln, &r1)) continue;
        if (j >= n || a[j] != ':') continue;
        j++;
        if (!cell_ref(a, n, &j, 1, 3, 1, &m0, &mn, &r2)) continue;
        if (j >= n || !is_quote(a[j])) continue;
        long long c1 = column_of(a + l0, ln), c2 = column_of(a + m0, mn);
        long long dr = (r2 > r1 ? r2 - r1 : r1 - r2) + 1, dc = (c2 > c1 ? c2 - c1 : c1 - c2) + 1;
        return dr * dc; /* at most 1e9 x 18279: fits */
    }
    return 0;
}

/* row | c | mergeCell at s[j], followed by a non-word character: its index, or -1. */
static int tag_name(const unsigned char *s, Py_ssize_t n, Py_ssize_t j, Py_ssize_t *after) {
    static const char *names[] = {"row", "c", "mergeCell"};
    for (int k = 0; k < 3; k++) {
        Py_ssize_t len = (Py_ssize_t)strlen(names[k]);
        if (j + len <= n && memcmp(s + j, names[k], (size_t)len) == 0 && (j + len == n || !is_word(s[j + len]))) {
            *after = j + len;
            return k;
        }
    }
    return -1;
}

static PyObject *xlsx_scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long row, col, rows, cols, merged;
    if (!PyArg_ParseTuple(args, "y*(LLLLL)", &view, &row, &col, &rows, &cols, &merged)) return NULL;
    const unsigned char *s = view.buf;
    Py_ssize_t n = view.len;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] != '<') continue;
        Py_ssize_t w = i + 1, after = 0;
        while (w < n && is_word(s[w])) w++;
        /* With a namespace prefix first, as the regex tries it; then without. */
        int kind = -1;
        if (w > i + 1 && w < n && s[w] == ':') kind = tag_name(s, n, w + 1, &after);
        if (kind < 0) kind = tag_name(s, n, i + 1, &after);
        if (kind < 0) continue;
        const unsigned char *end = memchr(s + after, '>', (size_t)(n - after));
        if (end == NULL) continue; /* no closing '>': the regex finds no tag here */
        const unsigned char *a = s + after;
        Py_ssize_t an = end - a;
        Py_ssize_t l0, ln;
        long long r;
        if (kind == 1) { /* c */
            if (find_r(a, an, &l0, &ln, &r) && ln > 0) {
                col = column_of(a + l0, ln);
                if (r > row) row = r;
            } else {
                col += 1;
            }
            if (!(an > 0 && a[an - 1] == '/')) { /* an empty cell does not extend the range */
                if (col > cols) cols = col;
                if (row > rows) rows = row;
            }
        } else if (kind == 0) { /* row */
            if (find_r(a, an, &l0, &ln, &r) && ln == 0) row = r;
            else row += 1;
            col = 0;
        } else {
            merged = sat_add(merged, find_ref_area(a, an));
        }
        i = end - s; /* the regex goes on after the tag */
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(LLLLL)", row, col, rows, cols, merged);
}

/* ---- xls ------------------------------------------------------------------------------ */

static unsigned rd16(const unsigned char *p) { return (unsigned)p[0] | ((unsigned)p[1] << 8); }

static int is_cell_record(unsigned t) {
    switch (t) {
    case 0x0203: case 0x027E: case 0x00FD: case 0x0204: case 0x0205: case 0x0006:
    case 0x00D6: case 0x0406: case 0x0003: case 0x0004: case 0x0005:
        return 1;
    default:
        return 0;
    }
}

static PyObject *biff_extent(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &view, &offset)) return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t n = view.len, pos = offset < 0 ? n : offset;
    long long rows = 0, cols = 0, merged = 0;
    while (pos + 4 <= n) {
        unsigned typ = rd16(d + pos), size = rd16(d + pos + 2);
        Py_ssize_t at = pos + 4, len = (Py_ssize_t)size;
        if (len > n - at) len = n - at;
        if (is_cell_record(typ) && len >= 4) {
            long long r = rd16(d + at) + 1, c = rd16(d + at + 2) + 1;
            if (r > rows) rows = r;
            if (c > cols) cols = c;
        } else if (typ == 0x00BD && len >= 6) { /* MULRK: row, first column, ..., last column */
            long long r = rd16(d + at) + 1, c = rd16(d + at + len - 2) + 1;
            if (r > rows) rows = r;
            if (c > cols) cols = c;
        } else if (typ == 0x00E5 && len >= 2) { /* MERGEDCELLS */
            Py_ssize_t count = rd16(d + at), fit = (len - 2) / 8;
            if (count > fit) count = fit;
            for (Py_ssize_t k = 0; k < count; k++) {
                const unsigned char *m = d + at + 2 + 8 * k;
                long long r1 = rd16(m), r2 = rd16(m + 2), c1 = rd16(m + 4), c2 = rd16(m + 6);
                merged = sat_add(merged, ((r2 > r1 ? r2 - r1 : r1 - r2) + 1) * ((c2 > c1 ? c2 - c1 : c1 - c2) + 1));
            }
        } else if (typ == 0x000A || (typ == 0x0809 && pos != offset)) {
            break;
        }
        pos += 4 + (Py_ssize_t)size;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(LLL)", rows, cols, merged);
}

static PyMethodDef methods[] = {
    {"xlsx_scan", xlsx_scan, METH_VARARGS, "Scan a piece of worksheet XML; returns the new state."},
    {"biff_extent", biff_extent, METH_VARARGS, "The extent of one BIFF8 sheet substream."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_extent", NULL, -1, methods};

PyMODINIT_FUNC PyInit__extent(void) { return PyModule_Create(&module); }
