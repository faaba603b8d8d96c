/*
 * Native scanning of table rows: the common rows of a CSV buffer or of a sheet's row
 * iterator are tokenized, checked and written as canonical lines here, without a
 * Python object per cell or per row.
 *
 * The Python pipeline stays the authority. This module takes a row only when it can
 * prove the Python path would accept it and produce these exact bytes; any other row
 * (an error to report, a warning to give, an unusual spelling, an unknown host, a
 * quoting form outside plain RFC 4180) stops the scan and the row goes through the
 * Python code. tests/input/test_rowscan.py compares both paths on generated files.
 *
 * Rules mirrored from batchjob/input/validate.py and pipeline.py:
 *   - whitespace is Python's str.isspace (Py_UNICODE_ISSPACE), as str.strip and re's \s;
 *   - a blank row (every cell whitespace) is skipped and counted; a stretch's blank rows
 *     come before its other rows (a blank row after taken rows starts a new stretch);
 *   - prompt: stripped, non-empty; weight syntax "(word:1.2)" is taken and its row named
 *     in the stretch, for the pipeline's warning;
 *   - ratio: empty, exactly an allowed spelling, or a spelling in Python's ratio cache;
 *     in a sheet also a time (16:09 for 16:9);
 *   - other cells of a sheet: text, empty, or a number, date or time (never blank);
 *   - URLs: split at whitespace , ， ; ； 、; each http(s)://host[:port][/?#rest] with an
 *     ASCII host whose verdict is True in the Python host cache;
 *   - strings are escaped as orjson escapes them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdio.h>
#include <string.h>

/* ---- configuration, set once from Python (validate.py's constants) ---------------- */

/* Short texts and the bytes each stands for: image extensions and ratio spellings. */
#define N_KEYS 16
typedef struct {
    char key[N_KEYS][8];
    Py_ssize_t len[N_KEYS];
    PyObject *tail[N_KEYS];
    int n;
} Keys;

static PyObject *g_prefix;      /* bytes: line up to the prompt's string */
static PyObject *g_file_part;   /* bytes: before an image URL's string */
static PyObject *g_host_cache;  /* dict: host -> bool */
static PyObject *g_no_ratio;    /* bytes: line end without an aspect ratio */
static PyObject *g_jpeg_tail;   /* bytes: after a URL with no known extension */
static PyObject *g_ratio_cache; /* dict: ratio text as written -> its spelling or None */
static Keys g_ratios;            /* allowed spelling -> line end with that ratio */
static Keys g_exts;              /* extension -> what follows an image URL */
static int g_ready;

/* ---- output buffer ------------------------------------------------------------------ */

typedef struct {
    char *d;
    Py_ssize_t n, cap;
} Out;

static int out_reserve(Out *o, Py_ssize_t more) {
    if (o->n + more <= o->cap) return 0;
    Py_ssize_t cap = o->cap ? o->cap : 1 << 16;
    while (cap < o->n + more) {
        if (cap > PY_SSIZE_T_MAX / 2) { PyErr_NoMemory(); return -1; }
        cap *= 2;
    }
    char *d = PyMem_Realloc(o->d, (size_t)cap);
    if (d == NULL) { PyErr_NoMemory(); return -1; }
    o->d = d;
    o->cap = cap;
    return 0;
}

static int out_put(Out *o, const char *s, Py_ssize_t n) {
    if (n == 0) return 0; /* o->d may still be NULL: memcpy(NULL, s, 0) is undefined */
    if (out_reserve(o, n) < 0) return -1;
    memcpy(o->d + o->n, s, (size_t)n);
    o->n += n;
    return 0;
}

static int out_bytes(Out *o, PyObject *b) {
    return out_put(o, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

static const char HEX[] = "0123456789abcdef";

/* A JSON string, escaped exactly as orjson escapes it. */
static int out_json(Out *o, const unsigned char *s, Py_ssize_t n) {
    if (out_reserve(o, n * 6 + 2) < 0) return -1;
    char *w = o->d + o->n;
    *w++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '\b': *w++ = 'b'; break;
        case '\t': *w++ = 't'; break;
        case '\n': *w++ = 'n'; break;
        case '\f': *w++ = 'f'; break;
        case '\r': *w++ = 'r'; break;
        default:
            *w++ = 'u'; *w++ = '0'; *w++ = '0';
            *w++ = HEX[c >> 4]; *w++ = HEX[c & 15];
        }
    }
    *w++ = '"';
    o->n = w - o->d;
    return 0;
}

/* ---- UTF-8 and whitespace -------------------------------------------------------------- */

/* The code point at s[*i] (advancing *i), or -1 for a byte sequence that is not UTF-8. */
static long u8_next(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i) {
    unsigned char c = s[*i];
    if (c < 0x80) { (*i)++; return c; }
    int len;
    long cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return -1;
    if (*i + len > n) return -1;
    for (int k = 1; k < len; k++) {
        unsigned char d = s[*i + k];
        if ((d & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return -1;
    *i += len;
    return cp;
}

static inline int is_space(long cp) { return cp >= 0 && Py_UNICODE_ISSPACE((Py_UCS4)cp); }

/* 1 when every character is whitespace (or there is none), 0 when not, -1 when not UTF-8. */
static int all_space(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        long cp = u8_next(s, n, &i);
        if (cp < 0) return -1;
        if (!is_space(cp)) return 0;
    }
    return 1;
}

/* str.strip(): the span without leading and trailing whitespace. -1 when not UTF-8. */
static int strip(const unsigned char **s, Py_ssize_t *n) {
    const unsigned char *p = *s;
    Py_ssize_t a = 0, b = *n;
    while (a < b) {
        Py_ssize_t j = a;
        long cp = u8_next(p, b, &j);
        if (cp < 0) return -1;
        if (!is_space(cp)) break;
        a = j;
    }
    while (b > a) {
        Py_ssize_t start = b - 1;
        while (start > a && (p[start] & 0xC0) == 0x80) start--;
        Py_ssize_t j = start;
        long cp = u8_next(p, b, &j);
        if (cp < 0 || j != b) return -1;
        if (!is_space(cp)) break;
        b = start;
    }
    *s = p + a;
    *n = b - a;
    return 0;
}

/* ---- one row ------------------------------------------------------------------------ */

/* WARNED: taken, and its prompt has weight syntax. REFUSED: not taken, and its only
   problem is an aspect ratio Python has refused before (the row's one error). */
enum { ROW_REFUSED = 3, ROW_WARNED = 2, ROW_TAKEN = 1, ROW_PYTHON = 0, ROW_ERROR = -1 };

/* The tail for a key, or NULL. */
static PyObject *key_tail(const Keys *t, const char *s, Py_ssize_t n) {
    for (int x = 0; x < t->n; x++)
        if (t->len[x] == n && memcmp(t->key[x], s, (size_t)n) == 0) return t->tail[x];
    return NULL;
}

/* What follows an image URL with this extension (ASCII-lowercased with `fold`), or NULL. */
static PyObject *ext_tail(const unsigned char *e, Py_ssize_t n, int fold) {
    if (n <= 0 || n > 7) return NULL;
    char low[8];
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = e[k];
        low[k] = (char)(fold && c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    return key_tail(&g_exts, low, n);
}

/* Set when a row went to Python for a verdict Python caches (a host or a ratio spelling
   not judged yet): the scan ends after that row, so the rows after it are read here
   with the verdict, not all left to Python while the first is still unjudged. */
static int g_unjudged;

/* The last host found public: most files name one or two hosts for all their images. */
static char g_last_host[256];
static Py_ssize_t g_last_host_len = -1;

static int host_public(const unsigned char *h, Py_ssize_t n) {
    if (n == g_last_host_len && memcmp(g_last_host, h, (size_t)n) == 0) return 1;
    PyObject *key = PyUnicode_DecodeASCII((const char *)h, n, "strict");
    if (key == NULL) return -1;
    PyObject *v = PyDict_GetItemWithError(g_host_cache, key); /* borrowed */
    Py_DECREF(key);
    if (v == NULL) {
        if (PyErr_Occurred()) return -1;
        g_unjudged = 1;
        return 0;
    }
    if (v != Py_True) return 0;
    if (n < (Py_ssize_t)sizeof g_last_host) {
        memcpy(g_last_host, h, (size_t)n);
        g_last_host_len = n;
    }
    return 1;
}

/* One image URL: its canonical part appended, or ROW_PYTHON when Python must judge it. */
static int url_part(Out *o, const unsigned char *u, Py_ssize_t n) {
    Py_ssize_t i;
    if (n >= 7 && PyOS_strnicmp((const char *)u, "http://", 7) == 0) i = 7;
    else if (n >= 8 && PyOS_strnicmp((const char *)u, "https://", 8) == 0) i = 8;
    else return ROW_PYTHON;
    Py_ssize_t h0 = i;
    while (i < n) {
        unsigned char c = u[i];
        if (c >= 0x80) return ROW_PYTHON;
        if (c <= 0x20 || c == 0x7f || strchr("/?#@:[]\\", c) != NULL) break;
        i++;
    }
    Py_ssize_t h1 = i;
    if (h1 == h0) return ROW_PYTHON;
    if (i < n && u[i] == ':') {
        Py_ssize_t d0 = ++i;
        long port = 0;
        while (i < n && u[i] >= '0' && u[i] <= '9' && i - d0 < 6) port = port * 10 + (u[i++] - '0');
        if (i == d0 || i - d0 > 5 || port < 1 || port > 65535) return ROW_PYTHON;
    }
    if (i < n && u[i] != '/' && u[i] != '?' && u[i] != '#') return ROW_PYTHON;
    /* \S* after the host: the item has no whitespace, it was split at it; but ASCII
       control bytes that are whitespace to Python never reach here, the others are \S. */
    int ok = host_public(u + h0, h1 - h0);
    if (ok <= 0) return ok < 0 ? ROW_ERROR : ROW_PYTHON;

    /* The image type: first the whole text after the last dot, then the path's extension. */
    Py_ssize_t dot = n - 1;
    while (dot >= 0 && u[dot] != '.') dot--;
    PyObject *tail = ext_tail(u + dot + 1, n - dot - 1, 0);
    if (tail == NULL) {
        Py_ssize_t end = 0;
        while (end < n && u[end] != '?') end++;
        Py_ssize_t hash = 0;
        while (hash < end && u[hash] != '#') hash++;
        end = hash;
        Py_ssize_t d = end - 1;
        while (d >= 0 && u[d] != '.') d--;
        for (Py_ssize_t k = d + 1; k < end; k++)
            if (u[k] >= 0x80) return ROW_PYTHON; /* str.lower beyond ASCII: Python's call */
        tail = ext_tail(u + d + 1, end - d - 1, 1);
        if (tail == NULL) tail = g_jpeg_tail;
    }
    if (out_bytes(o, g_file_part) < 0 || out_json(o, u, n) < 0 || out_bytes(o, tail) < 0) return ROW_ERROR;
    return ROW_TAKEN;
}

/* A URL separator at s[*i] (advancing *i past it): whitespace , ， ; ； 、. -1: not UTF-8. */
static int url_sep(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i) {
    unsigned char c = s[*i];
    if (c < 0x80) { /* the common case, without decoding */
        if (c == ',' || c == ';' || Py_UNICODE_ISSPACE(c)) {
            (*i)++;
            return 1;
        }
        return 0;
    }
    Py_ssize_t j = *i;
    long cp = u8_next(s, n, &j);
    if (cp < 0) return -1;
    if (cp == ',' || cp == ';' || cp == 0xFF0C || cp == 0xFF1B || cp == 0x3001 || is_space(cp)) {
        *i = j;
        return 1;
    }
    return 0;
}

static int urls_part(Out *o, const unsigned char *s, Py_ssize_t n) {
    if (strip(&s, &n) < 0) return ROW_PYTHON;
    if (n > 0 && s[0] == '[') return ROW_PYTHON; /* a JSON array: Python reads it */
    Py_ssize_t i = 0;
    while (i < n) {
        int r = url_sep(s, n, &i);
        if (r < 0) return ROW_PYTHON;
        if (r) continue;
        Py_ssize_t a = i;
        while (i < n) {
            Py_ssize_t j = i;
            r = url_sep(s, n, &j);
            if (r < 0) return ROW_PYTHON;
            if (r) break;
            i++;
            while (i < n && (s[i] & 0xC0) == 0x80) i++;
        }
        r = url_part(o, s + a, i - a);
        if (r != ROW_TAKEN) return r;
    }
    return ROW_TAKEN;
}

/* The line end for a ratio cell; NULL when Python must judge it (an error is not set),
   with *refused set when Python has already refused this very text (a row error). */
static PyObject *ratio_tail(const unsigned char *s, Py_ssize_t n, int *refused) {
    if (n == 0) return g_no_ratio;
    PyObject *tail = key_tail(&g_ratios, (const char *)s, n);
    if (tail != NULL) return tail;
    /* Another spelling (16：9, 16x9) Python has already read: its verdict is cached. */
    PyObject *key = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (key == NULL) { PyErr_Clear(); return NULL; }
    PyObject *v = PyDict_GetItemWithError(g_ratio_cache, key); /* borrowed */
    Py_DECREF(key);
    if (v == NULL) {
        if (!PyErr_Occurred()) g_unjudged = 1;
        PyErr_Clear();
        return NULL;
    }
    if (!PyUnicode_CheckExact(v)) { /* None: refused, or blank (no ratio, not an error) */
        *refused = v == Py_None && all_space(s, n) == 0;
        return NULL;
    }
    Py_ssize_t len;
    const char *spelled = PyUnicode_AsUTF8AndSize(v, &len);
    if (spelled == NULL) { PyErr_Clear(); return NULL; }
    return key_tail(&g_ratios, spelled, len);
}

/* Whether validate.has_sd_weights would be true: "(" text ":" number ")" with no other
   parenthesis inside, \s and \d as Python's re reads them. -1 when not UTF-8. */
static int sd_weights(const unsigned char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] != '(') continue;
        Py_ssize_t k = i + 1;
        while (k < n && p[k] != '(' && p[k] != ')') k++;
        if (k == n || p[k] != ')') continue;
        Py_ssize_t c = k - 1;
        while (c > i && p[c] != ':') c--;
        if (c == i) continue;
        /* After the last colon: \s* \d+ (\. \d+)? \s* up to the ")" */
        Py_ssize_t j = c + 1;
        long cp = 0;
        int state = 0; /* 0 spaces, 1 digits, 2 dot seen, 3 fraction digits, 4 trailing spaces */
        while (j < k) {
            cp = u8_next(p, k, &j);
            if (cp < 0) return -1;
            int digit = Py_UNICODE_ISDECIMAL((Py_UCS4)cp), space = is_space(cp);
            if (state == 0 && space) continue;
            if ((state == 0 || state == 1) && digit) { state = 1; continue; }
            if (state == 1 && cp == '.') { state = 2; continue; }
            if ((state == 2 || state == 3) && digit) { state = 3; continue; }
            if ((state == 1 || state == 3 || state == 4) && space) { state = 4; continue; }
            state = -1;
            break;
        }
        if (state == 1 || state == 3 || state == 4) return 1;
    }
    return 0;
}

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} Span;

/* A non-blank row's canonical line appended to `o` (when o is not NULL); ROW_WARNED when
   the prompt has weight syntax (validate.has_sd_weights), which the pipeline warns about. */
static int row_line(Out *o, Span prompt, Span ratio, Span urls) {
    const unsigned char *p = prompt.p;
    Py_ssize_t pn = prompt.n;
    if (strip(&p, &pn) < 0 || pn == 0) return ROW_PYTHON;
    int weights = memchr(p, '(', (size_t)pn) != NULL ? sd_weights(p, pn) : 0;
    if (weights < 0) return ROW_PYTHON;
    int refused = 0;
    PyObject *tail = ratio_tail(ratio.p, ratio.n, &refused);
    if (tail == NULL && !refused) return ROW_PYTHON;
    Out scratch = {0};
    if (refused) { /* an error row, if its URLs have nothing to report */
        int r = urls.n > 0 ? urls_part(&scratch, urls.p, urls.n) : ROW_TAKEN;
        PyMem_Free(scratch.d);
        return r == ROW_TAKEN ? ROW_REFUSED : r;
    }
    Out *w = o ? o : &scratch;
    Py_ssize_t mark = w->n;
    int r = ROW_TAKEN;
    if (out_bytes(w, g_prefix) < 0 || out_json(w, p, pn) < 0 || out_put(w, "}", 1) < 0) r = ROW_ERROR;
    if (r == ROW_TAKEN && urls.n > 0) r = urls_part(w, urls.p, urls.n);
    if (r == ROW_TAKEN && out_bytes(w, tail) < 0) r = ROW_ERROR;
    if (r != ROW_TAKEN) w->n = mark; /* nothing of a row that Python takes */
    PyMem_Free(scratch.d);
    return r == ROW_TAKEN && weights ? ROW_WARNED : r;
}

static int check_ready(void) {
    if (!g_ready) {
        PyErr_SetString(PyExc_RuntimeError, "rowscan: configure() first");
        return -1;
    }
    return 0;
}

/* ---- CSV ---------------------------------------------------------------------------- */

/* Where a kept field's text is: the buffer, or `unq` when a quoted field held doubled quotes. */
typedef struct {
    Py_ssize_t a, n;
    int in_unq;
} Field;

enum { STOP_END = 0, STOP_PYTHON = 1, STOP_CAP = 2, STOP_MORE = 3, STOP_BATCH = 4 };

#define MAX_FIELDS 4096 /* wider records go to Python's csv */

/* The cells of a record the scanner tokenized (b[a..end), well formed), as csv.reader
   gives them: the row then goes to Python's checks without being parsed again. */
static PyObject *record_cells(const unsigned char *b, Py_ssize_t a, Py_ssize_t end, int delim) {
    PyObject *cells = PyList_New(0);
    if (cells == NULL) return NULL;
    Out tmp = {0};
    Py_ssize_t i = a;
    for (;;) {
        PyObject *cell;
        if (i < end && b[i] == '"') {
            tmp.n = 0;
            i++;
            for (;;) {
                const unsigned char *q = memchr(b + i, '"', (size_t)(end - i));
                if (q == NULL) { /* cannot happen for a record the scanner read */
                    PyErr_SetString(PyExc_ValueError, "rowscan: record is not well formed");
                    goto fail;
                }
                Py_ssize_t k = q - b;
                if (out_put(&tmp, (const char *)b + i, k - i) < 0) goto fail;
                if (k + 1 < end && b[k + 1] == '"') {
                    if (out_put(&tmp, "\"", 1) < 0) goto fail;
                    i = k + 2;
                    continue;
                }
                i = k + 1;
                break;
            }
            cell = PyUnicode_DecodeUTF8(tmp.d ? tmp.d : "", tmp.n, "strict");
        } else {
            Py_ssize_t s = i;
            while (i < end && b[i] != delim && b[i] != '\r' && b[i] != '\n') i++;
            cell = PyUnicode_DecodeUTF8((const char *)b + s, i - s, "strict");
        }
        if (cell == NULL) goto fail;
        int r = PyList_Append(cells, cell);
        Py_DECREF(cell);
        if (r < 0) goto fail;
        if (i < end && b[i] == delim) {
            i++;
            continue;
        }
        break;
    }
    PyMem_Free(tmp.d);
    return cells;
fail:
    PyMem_Free(tmp.d);
    Py_DECREF(cells);
    return NULL;
}

/* A stretch being read: the lines of its taken rows, its rows (blank ones first) and, by
   their index among those rows, the rows whose prompt has weight syntax (`warned`) and the
   rows refused for their aspect ratio alone (`refused`: (index, the ratio cell's text));
   each list NULL while it is empty. */
typedef struct {
    Out out;
    Py_ssize_t rows, blank;
    PyObject *warned, *refused;
} Stretch;

static int append_new(PyObject **list, PyObject *item) {
    if (item == NULL) return -1;
    int bad = (*list == NULL && (*list = PyList_New(0)) == NULL) || PyList_Append(*list, item) < 0;
    Py_DECREF(item);
    return bad ? -1 : 0;
}

/* A non-blank row added to the stretch; `r` is row_line's verdict for it. */
static int stretch_row(Stretch *st, int r, Span ratio) {
    if (r == ROW_WARNED && append_new(&st->warned, PyLong_FromSsize_t(st->rows)) < 0) return -1;
    if (r == ROW_REFUSED &&
        append_new(&st->refused, Py_BuildValue("(ns#)", st->rows, (const char *)ratio.p, ratio.n)) < 0)
        return -1;
    st->rows++;
    return 0;
}

static PyObject *or_empty(PyObject **list) {
    PyObject *v = *list != NULL ? *list : PyTuple_New(0);
    *list = NULL;
    return v;
}

/* The rows read since the last part, as one (lines, rows, blank, warned, refused) part;
   none when empty. */
static int flush_stretch(PyObject *parts, Stretch *st) {
    if (st->rows == 0) return 0;
    PyObject *warned = or_empty(&st->warned), *refused = or_empty(&st->refused);
    if (warned == NULL || refused == NULL) {
        Py_XDECREF(warned);
        Py_XDECREF(refused);
        return -1;
    }
    PyObject *part = Py_BuildValue("(y#nnNN)", st->out.d ? st->out.d : "", st->out.n, st->rows, st->blank, warned,
                                   refused);
    if (part == NULL) return -1;
    int r = PyList_Append(parts, part);
    Py_DECREF(part);
    st->out.n = 0;
    st->rows = st->blank = 0;
    return r;
}

static void stretch_free(Stretch *st) {
    PyMem_Free(st->out.d);
    Py_CLEAR(st->warned);
    Py_CLEAR(st->refused);
}

static PyObject *csv_run(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, pi, ri, ui, max_cell, cap, max_rows_out;
    int final, delim, build;
    if (!PyArg_ParseTuple(args, "y*npinnnnnnp", &view, &pos, &final, &delim, &pi, &ri, &ui, &max_cell, &cap,
                          &max_rows_out, &build))
        return NULL;
    if (check_ready() < 0) { PyBuffer_Release(&view); return NULL; }
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len;
    if (pos < 0 || pos > n || delim <= 0 || delim > 127 || delim == '"' || delim == '\r' || delim == '\n') {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "rowscan: bad arguments");
        return NULL;
    }
    unsigned char special[256] = {0};
    special[(unsigned char)delim] = special['"'] = special['\r'] = special['\n'] = 1;
    Py_ssize_t want[3] = {pi, ri, ui};

    Stretch st = {{0}, 0, 0, NULL, NULL};
    Out unq = {0};
    /* parts: stretches of rows read here, (lines, rows, blank), and between them the cells
       of each row left to Python's checks, in file order. */
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t rows = 0, taken = 0;
    int stop = STOP_END, failed = 0;

    while (pos < n || !final) {
        if (pos >= n) { stop = STOP_MORE; break; }
        if (rows >= max_rows_out) { stop = STOP_BATCH; break; } /* a bounded batch per call */
        Py_ssize_t i = pos, nf = 0;
        Field kept[3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
        int is_blank = 1;
        int verdict = 1; /* 1: a record read here; 0: Python's csv reads it; 2: needs more bytes */
        unq.n = 0;
        for (;;) {
            Field f = {0, 0, 0};
            if (++nf > MAX_FIELDS) { verdict = 0; break; }
            if (i < n && b[i] == '"') {
                /* Quoted: up to a quote not doubled, which must end the field. */
                Py_ssize_t j = i + 1, u0 = unq.n;
                int doubled = 0;
                f.a = j;
                for (;;) {
                    const unsigned char *q = memchr(b + j, '"', (size_t)(n - j));
                    if (q == NULL) { verdict = final ? 0 : 2; break; }
                    Py_ssize_t k = q - b;
                    if (k + 1 < n && b[k + 1] == '"') {
                        if (out_put(&unq, (const char *)b + j, k + 1 - j) < 0) { failed = 1; break; }
                        doubled = 1;
                        j = k + 2;
                        continue;
                    }
                    if (k + 1 == n && !final) { verdict = 2; break; }
                    if (doubled) {
                        if (out_put(&unq, (const char *)b + j, k - j) < 0) { failed = 1; break; }
                        f.a = u0;
                        f.n = unq.n - u0;
                        f.in_unq = 1;
                    } else {
                        f.n = k - f.a;
                    }
                    i = k + 1;
                    break;
                }
                if (failed || verdict != 1) break;
                if (i < n && b[i] != delim && b[i] != '\r' && b[i] != '\n') { verdict = 0; break; }
            } else {
                f.a = i;
                while (i < n && !special[b[i]]) i++;
                if (i < n && b[i] == '"') { verdict = 0; break; } /* a quote inside: Python's rules */
                f.n = i - f.a;
            }
            if (f.n > max_cell) { verdict = 0; break; } /* bytes >= characters: Python counts */
            if (is_blank) {
                const unsigned char *s = f.in_unq ? (const unsigned char *)unq.d + f.a : b + f.a;
                int r = all_space(s, f.n);
                if (r < 0) { verdict = 0; break; }
                is_blank = r;
            }
            for (int k = 0; k < 3; k++)
                if (want[k] == nf - 1) kept[k] = f;
            if (i == n) {
                if (!final) verdict = 2;
                break;
            }
            if (b[i] == delim) { i++; continue; }
            if (b[i] == '\r') {
                if (i + 1 == n && !final) { verdict = 2; break; }
                i += (i + 1 < n && b[i + 1] == '\n') ? 2 : 1;
            } else {
                i++;
            }
            break;
        }
        if (failed) break;
        if (verdict == 2) { stop = STOP_MORE; break; }
        if (verdict == 0) { stop = STOP_PYTHON; break; }
        if (is_blank) {
            /* A stretch's blank rows come first, so its lines map to its last rows in order. */
            if (st.rows > st.blank && flush_stretch(parts, &st) < 0) { failed = 1; break; }
            st.blank++;
            st.rows++;
            rows++;
            pos = i;
            continue;
        }
        if (taken >= cap) { stop = STOP_CAP; break; }
        Span sp[3];
        for (int k = 0; k < 3; k++) {
            /* A missing column reads as empty text (want < 0, or beyond this record). */
            int present = want[k] >= 0 && want[k] < nf;
            sp[k].p = !present ? (const unsigned char *)"" : kept[k].in_unq ? (const unsigned char *)unq.d + kept[k].a : b + kept[k].a;
            sp[k].n = present ? kept[k].n : 0;
        }
        g_unjudged = 0;
        int r = row_line(build ? &st.out : NULL, sp[0], sp[1], sp[2]);
        if (r == ROW_ERROR) { failed = 1; break; }
        if (r == ROW_PYTHON) {
            /* Python checks this row: it gets the cells, and the scan goes on after it. */
            PyObject *cells = record_cells(b, pos, i, delim);
            if (cells == NULL) { /* Python's csv reads it from `pos` */
                PyErr_Clear();
                stop = STOP_PYTHON;
                break;
            }
            int bad = flush_stretch(parts, &st) < 0 || PyList_Append(parts, cells) < 0;
            Py_DECREF(cells);
            if (bad) { failed = 1; break; }
            if (g_unjudged) { /* the scan goes on once Python has judged it */
                rows++;
                taken++;
                pos = i;
                stop = STOP_BATCH;
                break;
            }
        } else if (stretch_row(&st, r, sp[1]) < 0) {
            failed = 1;
            break;
        }
        rows++;
        taken++;
        pos = i;
    }
    PyBuffer_Release(&view);
    PyMem_Free(unq.d);
    if (!failed && flush_stretch(parts, &st) < 0) failed = 1;
    stretch_free(&st);
    if (failed) {
        Py_DECREF(parts);
        return NULL;
    }
    return Py_BuildValue("(Nni)", parts, pos, stop);
}

/* ---- sheets --------------------------------------------------------------------------- */

/* A field's cell as a UTF-8 span; 0 when Python must convert the cell. A ratio typed as a
   time (Excel turns 16:9 into 16:09) reads "16:9", as cell_text reads it, into `scratch`. */
static int cell_span(PyObject *row, Py_ssize_t k, Span *sp, char *scratch) {
    if (k < 0 || k >= PyList_GET_SIZE(row)) {
        sp->p = (const unsigned char *)"";
        sp->n = 0;
        return 1;
    }
    PyObject *v = PyList_GET_ITEM(row, k);
    if (scratch != NULL && PyTime_CheckExact(v)) {
        int len = snprintf(scratch, 16, "%d:%d", PyDateTime_TIME_GET_HOUR(v), PyDateTime_TIME_GET_MINUTE(v));
        sp->p = (const unsigned char *)scratch;
        sp->n = len;
        return 1;
    }
    if (!PyUnicode_CheckExact(v)) return 0;
    const char *s = PyUnicode_AsUTF8AndSize(v, &sp->n);
    if (s == NULL) {
        /* Not encodable (a lone surrogate): Python's path says what that means. */
        PyErr_Clear();
        return 0;
    }
    sp->p = (const unsigned char *)s;
    return 1;
}

static int str_blank(PyObject *v) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    for (Py_ssize_t c = 0; c < len; c++)
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, c))) return 0;
    return 1;
}

/* Texts of numbers, dates and times (cell_text) are never blank and never this long. */
#define SHORT_TEXT 64

/* A cell as cell_text would read it, for the blank and length checks: 1 blank, 0 not
   blank, -1 Python converts it. `ratio`: the cell is read as an aspect ratio. */
static int cell_kind(PyObject *v, Py_ssize_t max_cell, int field, int ratio) {
    if (PyUnicode_CheckExact(v)) return PyUnicode_GET_LENGTH(v) > max_cell ? -1 : str_blank(v);
    if (ratio) return PyTime_CheckExact(v) && max_cell >= SHORT_TEXT ? 0 : -1;
    if (field) return -1; /* a number as a prompt or URL: Python's cell_text */
    if (v == Py_None) return 1;
    if (max_cell < SHORT_TEXT) return -1;
    if (PyFloat_CheckExact(v) || PyBool_Check(v) || PyDate_CheckExact(v) || PyDateTime_CheckExact(v) ||
        PyTime_CheckExact(v) || PyDelta_CheckExact(v))
        return 0;
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        return overflow ? -1 : 0;
    }
    return -1;
}

static PyObject *sheet_run(PyObject *self, PyObject *args) {
    PyObject *it;
    Py_ssize_t pi, ri, ui, max_cell, cap, max_rows_out;
    int build;
    if (!PyArg_ParseTuple(args, "Onnnnnnp", &it, &pi, &ri, &ui, &max_cell, &cap, &max_rows_out, &build)) return NULL;
    if (check_ready() < 0) return NULL;
    if (!PyIter_Check(it)) {
        PyErr_SetString(PyExc_TypeError, "rowscan: an iterator of rows expected");
        return NULL;
    }
    /* parts as csv_run's; a row left to Python is the row itself, as the iterator gave it. */
    PyObject *parts = PyList_New(0);
    if (parts == NULL) return NULL;
    Stretch st = {{0}, 0, 0, NULL, NULL};
    Py_ssize_t rows = 0, taken = 0;
    int done = 0, failed = 0;
    while (rows < max_rows_out) {
        PyObject *row = PyIter_Next(it);
        if (row == NULL) {
            if (PyErr_Occurred()) failed = 1;
            else done = 1;
            break;
        }
        int r = ROW_PYTHON, is_blank = 0;
        g_unjudged = 0;
        if (PyList_CheckExact(row)) {
            /* Every cell one whose text is known here, else Python converts and checks it. */
            Py_ssize_t w = PyList_GET_SIZE(row);
            r = ROW_TAKEN;
            is_blank = 1;
            for (Py_ssize_t k = 0; k < w; k++) {
                int c = cell_kind(PyList_GET_ITEM(row, k), max_cell, k == pi || k == ui, k == ri);
                if (c < 0) { r = ROW_PYTHON; break; }
                is_blank &= c;
            }
        }
        if (r == ROW_TAKEN && is_blank) {
            Py_DECREF(row);
            if (st.rows > st.blank && flush_stretch(parts, &st) < 0) { failed = 1; break; }
            rows++;
            st.rows++;
            st.blank++;
            continue;
        }
        int at_cap = taken >= cap;
        Span sp[3];
        char scratch[16]; /* a ratio typed as a time, as text: sp[1] may point here */
        if (r == ROW_TAKEN && !at_cap) {
            Py_ssize_t idx[3] = {pi, ri, ui};
            for (int k = 0; k < 3 && r == ROW_TAKEN; k++) {
                int c = cell_span(row, idx[k], &sp[k], k == 1 ? scratch : NULL);
                if (c < 0) r = ROW_ERROR;
                else if (c == 0) r = ROW_PYTHON;
            }
            if (r == ROW_TAKEN) r = row_line(build ? &st.out : NULL, sp[0], sp[1], sp[2]);
        } else {
            r = ROW_PYTHON;
        }
        if (r == ROW_ERROR) { Py_DECREF(row); failed = 1; break; }
        if (r == ROW_PYTHON) {
            int bad = flush_stretch(parts, &st) < 0 || PyList_Append(parts, row) < 0;
            Py_DECREF(row);
            if (bad) { failed = 1; break; }
            if (at_cap) break; /* the budget is spent: Python says what this row means */
            if (r == ROW_PYTHON && g_unjudged) { /* read on once Python has judged it */
                rows++;
                taken++;
                break;
            }
        } else {
            int bad = stretch_row(&st, r, sp[1]) < 0; /* sp: the row's cells, alive until it goes */
            Py_DECREF(row);
            if (bad) { failed = 1; break; }
        }
        rows++;
        taken++;
    }
    if (!failed && flush_stretch(parts, &st) < 0) failed = 1;
    stretch_free(&st);
    if (failed) {
        Py_DECREF(parts);
        return NULL;
    }
    return Py_BuildValue("(Ni)", parts, done);
}

/* ---- configuration ---------------------------------------------------------------------- */

static int keep_bytes(PyObject **slot, PyObject *v) {
    if (!PyBytes_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "rowscan: bytes expected");
        return -1;
    }
    Py_INCREF(v);
    Py_XSETREF(*slot, v);
    return 0;
}

/* A dict's short str keys and their bytes; a None key is not one of them. */
static int load_keys(Keys *t, PyObject *dict) {
    PyObject *k, *v;
    Py_ssize_t p = 0;
    t->n = 0;
    while (PyDict_Next(dict, &p, &k, &v)) {
        if (k == Py_None) continue;
        Py_ssize_t len;
        const char *s = PyUnicode_Check(k) ? PyUnicode_AsUTF8AndSize(k, &len) : NULL;
        if (s == NULL || len > 7 || t->n == N_KEYS) {
            PyErr_SetString(PyExc_ValueError, "rowscan: at most 16 keys, each a str of up to 7 bytes");
            return -1;
        }
        memcpy(t->key[t->n], s, (size_t)len);
        t->len[t->n] = len;
        if (keep_bytes(&t->tail[t->n], v) < 0) return -1;
        t->n++;
    }
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *prefix, *file_part, *jpeg_tail, *exts, *configs, *host_cache, *ratio_cache;
    if (!PyArg_ParseTuple(args, "SSSO!O!O!O!", &prefix, &file_part, &jpeg_tail, &PyDict_Type, &exts, &PyDict_Type,
                          &configs, &PyDict_Type, &host_cache, &PyDict_Type, &ratio_cache))
        return NULL;
    g_ready = 0;
    if (keep_bytes(&g_prefix, prefix) < 0 || keep_bytes(&g_file_part, file_part) < 0 ||
        keep_bytes(&g_jpeg_tail, jpeg_tail) < 0)
        return NULL;
    PyObject *none_tail = PyDict_GetItemWithError(configs, Py_None); /* borrowed */
    if (none_tail == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "rowscan: the line end without a ratio is missing");
        return NULL;
    }
    if (load_keys(&g_exts, exts) < 0 || load_keys(&g_ratios, configs) < 0 || keep_bytes(&g_no_ratio, none_tail) < 0)
        return NULL;
    Py_INCREF(host_cache);
    Py_XSETREF(g_host_cache, host_cache);
    Py_INCREF(ratio_cache);
    Py_XSETREF(g_ratio_cache, ratio_cache);
    g_last_host_len = -1;
    g_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *py_row_line(PyObject *self, PyObject *args) {
    /* One row, for tests: (the canonical line, whether its prompt has weight syntax), (None,
       False) for a row refused for its ratio alone, or None when Python must take the row. */
    const char *p, *r, *u;
    Py_ssize_t pn, rn, un;
    if (!PyArg_ParseTuple(args, "s#s#s#", &p, &pn, &r, &rn, &u, &un)) return NULL;
    if (check_ready() < 0) return NULL;
    Out o = {0};
    Span a = {(const unsigned char *)p, pn}, b = {(const unsigned char *)r, rn}, c = {(const unsigned char *)u, un};
    int res = row_line(&o, a, b, c);
    PyObject *ret;
    if (res == ROW_ERROR) ret = NULL;
    else if (res == ROW_PYTHON) { ret = Py_None; Py_INCREF(ret); }
    else if (res == ROW_REFUSED) ret = Py_BuildValue("(OO)", Py_None, Py_False);
    else ret = Py_BuildValue("(y#O)", o.d ? o.d : "", o.n, res == ROW_WARNED ? Py_True : Py_False);
    PyMem_Free(o.d);
    return ret;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(prefix, file_part, jpeg_tail, ext_tails, ratio_tails, host_cache, ratio_cache)"},
    {"csv_run", csv_run, METH_VARARGS,
     "csv_run(buf, pos, final, delim, pi, ri, ui, max_cell, cap, max_rows, build)"
     " -> ([(lines, rows, blank, warned, refused) | cells of a row for Python, ...], pos, stop)"},
    {"sheet_run", sheet_run, METH_VARARGS,
     "sheet_run(rows, pi, ri, ui, max_cell, cap, max_rows, build) -> (parts, done)"},
    {"row_line", py_row_line, METH_VARARGS, "row_line(prompt, ratio, urls) -> (bytes | None, warned) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowscan", NULL, -1, methods, NULL, NULL, NULL, NULL};

/* Raised whenever what the functions take or give changes: rowscan.py does not use a
   module built from other sources (a stale build in a working copy). */
#define PROTOCOL 5

PyMODINIT_FUNC PyInit__rowscan(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "PROTOCOL", PROTOCOL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
