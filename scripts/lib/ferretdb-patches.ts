// Fixes to FerretDB v1.24.2, applied to the source copy before it is built.
//
// Two change how its SQLite backend finds rows, never which documents a command matches: FerretDB
// applies the whole filter itself to every row SQLite returns, so the SQL WHERE clause is only a
// pre-filter, and each fix keeps it a superset of the matching documents.
//
// 1. `_id` lookups use the `_id` index. FerretDB creates that index on `_ferretdb_sjson->"_id"` but
//    queries `_ferretdb_sjson->'$._id'`, an expression SQLite does not match to the index, so every
//    lookup, update and delete by `_id` scanned the whole table. It now queries `->'_id'` (the
//    same value; SQLite matches it to the index).
// 2. More of the filter reaches SQL. Upstream pushed down only a filter that is exactly
//    `{_id: <string or ObjectId>}`; everything else (`{_id, replyState: {$in: …}}`, `{userId}`)
//    decoded every document of the collection in Go. Now an `_id` equality is pushed down
//    whatever else the filter holds, and so is a top-level field equal to a plain ASCII string,
//    as `field = "value" OR field is an array` (MongoDB's equality also matches an array that
//    holds the value). Both use the collection's indexes when there are some.
//
// These two make the embedded database's costs look like the platform's, where a lookup by key
// does not grow with the collection; the app does not depend on them.
// test/integration/ferretdb-pushdown.test.ts checks the results.
//
// 3. The `update` command runs its updates as MongoDB does (the app relies on this: an unordered
//    bulk write where a duplicate key means "already there", see shared/data/gateway.ts).
//    Upstream ignored `ordered`, ran the updates until the first error and then answered with
//    that error alone, at index 0 and with no counts: the updates before it were applied but not
//    reported, those after it never ran (FerretDB issue 2612), and an upserted id carried the
//    number of upserts so far instead of its update's index. Now each update that fails is a
//    write error with its own index, an unordered command goes on with the next update, and the
//    counts and upserted ids of those that ran are kept. Running each update in its own call also
//    releases its query's SQLite connection when it ends: upstream deferred closing them all to the
//    end of the command, an update matching an existing document holds one (it stops reading after
//    the first row), and the pool has 100 (pool/opendb.go), so replacing more than 100 existing
//    documents in one command waited forever (a restore over its own data hung and wedged the
//    database). test/integration/unordered-bulk.test.ts checks MongoDB's results on whichever
//    server the suite runs; test/integration/scripts-restore.test.ts restores a file twice.
//
// 4. The commands that change documents (`update`, `findAndModify`, `delete`) run one at a time,
//    whichever connection sends them. FerretDB applies each as a read, a change and a write
//    without isolation: two clients' conditional updates of one document both "won" (two app
//    instances on one database both took a user's reply lock and answered a message twice, 11
//    of 30), and two `$inc`s lost one. MongoDB and Cosmos DB isolate each single-document write,
//    which the app relies on for exactly-once; the data module's adapter serialises them only
//    within its own process (shared/data/adapter.ts), and two hosts, the two threads of
//    `npm run dev`, or a script beside it are several. Reads still run at once.
//    test/integration/two-hosts.test.ts runs one job on two instances at once.
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Part of the binary's cache path: a new value rebuilds FerretDB once on every machine. */
export const FERRETDB_PATCH_LEVEL = 'pushdown-1-update-1-writes-1';

export interface FerretDbEdit {
  readonly file: string;
  readonly find: string;
  readonly replace: string;
}

const ID_PUSHDOWN = `	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			whereClause = fmt.Sprintf(\` WHERE %s = ?\`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}
`;

/** The same block in Explain, which also reports the pushdown. */
const ID_PUSHDOWN_EXPLAIN = ID_PUSHDOWN.replace(
  'case string, types.ObjectID:\n',
  'case string, types.ObjectID:\n\t\t\tfilterPushdown = true\n',
);

const UPDATE_RESULT = `	res := must.NotFail(types.NewDocument(
		"n", matched,
	))

	if upserted.Len() != 0 {
		res.Set("upserted", upserted)
	}
`;

const UPDATE_AT_ONCE = `	// TODO https://github.com/FerretDB/FerretDB/issues/2612
	_ = params.Ordered

	matched, modified, upserted, err := h.updateDocument(connCtx, params)
	if err != nil {
		return nil, handleUpdateError(params.DB, params.Collection, "update", err)
	}

${UPDATE_RESULT}`;

const UPDATE_EACH = `	matched, modified, upserted, writeErrors, err := h.updateEach(connCtx, params)
	if err != nil {
		return nil, err
	}

${UPDATE_RESULT}
	if writeErrors.Len() != 0 {
		res.Set("writeErrors", writeErrors)
	}
`;

/** Fix 4: the lock the commands that change documents take first. */
const WRITE_LOCK_GO = `// Added by whatsapp-cosmos-bot's FerretDB build (scripts/lib/ferretdb-patches.ts).

package handler

import "sync"

// writes runs update, findAndModify and delete one at a time, whichever connection sends them:
// each is a read, a change and a write, which the SQLite backend does not isolate.
var writes sync.Mutex
`;

const ONE_WRITE_AT_A_TIME = `\twrites.Lock()\n\tdefer writes.Unlock()\n\n`;

/** The exact text each fix replaces (a stand-in source in the tests is made of these). */
export const FERRETDB_EDITS: readonly FerretDbEdit[] = [
  {
    file: 'internal/backends/sqlite/metadata/metadata.go',
    find: `IDColumn = DefaultColumn + "->'$._id'"`,
    replace: `IDColumn = DefaultColumn + "->'_id'"`,
  },
  {
    file: 'internal/backends/sqlite/collection.go',
    find: ID_PUSHDOWN,
    replace: `	whereClause, args = prepareWhereClause(params.Filter)\n`,
  },
  {
    file: 'internal/backends/sqlite/collection.go',
    find: ID_PUSHDOWN_EXPLAIN,
    replace: `	whereClause, args = prepareWhereClause(params.Filter)\n	filterPushdown = whereClause != ""\n`,
  },
  {
    file: 'internal/handler/common/update_params.go',
    find: '\tOrdered                  bool            `ferretdb:"ordered,ignored"`',
    replace: '\tOrdered                  bool            `ferretdb:"ordered,opt"`',
  },
  {
    // MongoDB's default, as for insert and delete.
    file: 'internal/handler/common/update_params.go',
    find: '\tvar params UpdateParams\n',
    replace: '\tparams := UpdateParams{Ordered: true}\n',
  },
  {
    file: 'internal/handler/msg_update.go',
    find: UPDATE_AT_ONCE,
    replace: UPDATE_EACH,
  },
  ...(['Update', 'Delete', 'FindAndModify'] as const).map((name): FerretDbEdit => ({
    file: `internal/handler/msg_${name.toLowerCase()}.go`,
    find: `func (h *Handler) Msg${name}(connCtx context.Context, msg *wire.OpMsg) (*wire.OpMsg, error) {\n`,
    replace: `func (h *Handler) Msg${name}(connCtx context.Context, msg *wire.OpMsg) (*wire.OpMsg, error) {\n${ONE_WRITE_AT_A_TIME}`,
  })),
];

/** The pre-filter: `_id` and plain top-level string equalities, ANDed. */
const WHERE_CLAUSE_GO = `// Added by whatsapp-cosmos-bot's FerretDB build (scripts/lib/ferretdb-patches.ts).

package sqlite

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

var (
	plainField = regexp.MustCompile(\`^[A-Za-z_][A-Za-z0-9_]*$\`)
	// Printable ASCII without the characters JSON encoders escape differently.
	plainString = regexp.MustCompile(\`^[ !#-%'-;=?-\\[\\]-~]*$\`)
)

// prepareWhereClause returns a WHERE clause that keeps every document the filter can match:
// _id equal to a string or ObjectId, and top-level fields equal to a plain string (or holding an
// array, which may contain it). FerretDB filters the returned documents itself afterwards.
func prepareWhereClause(filter *types.Document) (string, []any) {
	if filter == nil {
		return "", nil
	}

	var conds []string
	var args []any
	seen := map[string]bool{}

	for _, k := range filter.Keys() {
		if seen[k] {
			return "", nil // a repeated key: leave it all to FerretDB
		}
		seen[k] = true
	}

	for _, k := range filter.Keys() {
		v := must.NotFail(filter.Get(k))

		if k == "_id" {
			switch v.(type) {
			case string, types.ObjectID:
				conds = append(conds, fmt.Sprintf(\`%s = ?\`, metadata.IDColumn))
				args = append(args, string(must.NotFail(sjson.MarshalSingleValue(v))))
			}

			continue
		}

		s, ok := v.(string)
		if !ok || !plainField.MatchString(k) || !plainString.MatchString(s) {
			continue
		}

		col := fmt.Sprintf(\`%s->'%s'\`, metadata.DefaultColumn, k)
		conds = append(conds, fmt.Sprintf(\`(%[1]s = ? OR (%[1]s >= '[' AND %[1]s < '\\'))\`, col))
		args = append(args, string(must.NotFail(sjson.MarshalSingleValue(s))))
	}

	if len(conds) == 0 {
		return "", nil
	}

	return " WHERE " + strings.Join(conds, " AND "), args
}
`;

/** Each update of an update command on its own, with its own write error (fix 3). */
const UPDATE_EACH_GO = `// Added by whatsapp-cosmos-bot's FerretDB build (scripts/lib/ferretdb-patches.ts).

package handler

import (
	"context"
	"errors"

	"github.com/FerretDB/FerretDB/internal/handler/common"
	"github.com/FerretDB/FerretDB/internal/handler/handlererrors"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// updateEach runs the updates of an update command one after another, as MongoDB does: an update
// that fails becomes a write error with its own index and, unless the command is ordered, the
// next updates still run. The counts and the upserted ids (with their update's index) of the
// updates that ran are kept. Any other error ends the command, as upstream.
func (h *Handler) updateEach(ctx context.Context, params *common.UpdateParams) (int32, int32, *types.Array, *types.Array, error) {
	var matched, modified int32
	upserted := types.MakeArray(0)
	writeErrors := types.MakeArray(0)

	for i := range params.Updates {
		one := *params
		one.Updates = params.Updates[i : i+1]

		m, n, u, err := h.updateDocument(ctx, &one)
		if err != nil {
			err = handleUpdateError(params.DB, params.Collection, "update", err)

			var we *handlererrors.WriteErrors
			if !errors.As(err, &we) {
				return 0, 0, nil, nil, err
			}

			we.Each(func(code handlererrors.ErrorCode, msg string) {
				writeErrors.Append(must.NotFail(types.NewDocument(
					"index", int32(i),
					"code", int32(code),
					"errmsg", msg,
				)))
			})

			if params.Ordered {
				break
			}

			continue
		}

		matched += m
		modified += n

		for j := 0; j < u.Len(); j++ {
			doc := must.NotFail(u.Get(j)).(*types.Document)
			upserted.Append(must.NotFail(types.NewDocument(
				"index", int32(i),
				"_id", must.NotFail(doc.Get("_id")),
			)))
		}
	}

	return matched, modified, upserted, writeErrors, nil
}
`;

/** The code and message of each write error (their fields are private to the package). */
const WRITE_ERRORS_EACH_GO = `// Added by whatsapp-cosmos-bot's FerretDB build (scripts/lib/ferretdb-patches.ts).

package handlererrors

// Each calls f with the code and the message of every write error.
func (we *WriteErrors) Each(f func(code ErrorCode, msg string)) {
	for _, e := range we.errs {
		f(e.code, e.errmsg)
	}
}
`;

/** Files the fixes add to the source. */
const FERRETDB_NEW_FILES: Readonly<Record<string, string>> = {
  'internal/backends/sqlite/where_clause.go': WHERE_CLAUSE_GO,
  'internal/handler/update_each.go': UPDATE_EACH_GO,
  'internal/handler/handlererrors/write_each.go': WRITE_ERRORS_EACH_GO,
  'internal/handler/write_lock.go': WRITE_LOCK_GO,
};

/** Applies the fixes to a writable copy of FerretDB's source; fails if the source is not the expected one. */
export async function applyFerretDbPatches(source: string): Promise<void> {
  for (const edit of FERRETDB_EDITS) {
    const file = path.join(source, edit.file);
    const text = await fs.readFile(file, 'utf8');
    const at = text.indexOf(edit.find);
    if (at < 0 || text.indexOf(edit.find, at + 1) >= 0)
      throw new Error(`FerretDB source differs from the expected one in ${edit.file}; cannot patch`);
    await fs.writeFile(file, text.slice(0, at) + edit.replace + text.slice(at + edit.find.length));
  }
  for (const [file, text] of Object.entries(FERRETDB_NEW_FILES)) {
    await fs.mkdir(path.dirname(path.join(source, file)), { recursive: true });
    await fs.writeFile(path.join(source, file), text);
  }
}
