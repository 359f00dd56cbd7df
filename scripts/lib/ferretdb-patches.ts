// Two fixes to FerretDB v1.24.2's SQLite backend, applied to the source copy before it is built.
// They change how FerretDB finds rows, never which documents a command matches: FerretDB applies
// the whole filter itself to every row SQLite returns, so the SQL WHERE clause is only a
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
// The app does not depend on these fixes (Cosmos DB and MongoDB use their indexes anyway): they
// make the embedded database's costs look like the platform's, where a lookup by key does not
// grow with the collection. test/integration/ferretdb-pushdown.test.ts checks the results.
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Part of the binary's cache path: a new value rebuilds FerretDB once on every machine. */
export const FERRETDB_PATCH_LEVEL = 'pushdown-1';

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
  await fs.writeFile(path.join(source, 'internal/backends/sqlite/where_clause.go'), WHERE_CLAUSE_GO);
}
