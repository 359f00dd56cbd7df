// `npm run token -- create --name N [--expires-days D]` / `list` / `revoke ID`: management API tokens.
import {
  createToken,
  formatToken,
  isTokenExpiryDays,
  RESERVED_TOKEN_NAMES,
  TOKEN_EXPIRY_DAYS,
  TOKEN_NAME_MAX,
  tokenNameProblem,
} from '../shared/manage/tokens';
import { parseCli, runMain, ScriptError, UsageError, withDataStore, type Main } from './lib/cli';

const HELP = `
Usage:
  npm run token -- create --name NAME [--expires-days DAYS]   (DAYS: ${TOKEN_EXPIRY_DAYS.min} to ${TOKEN_EXPIRY_DAYS.max}; default never)
  npm run token -- list
  npm run token -- revoke ID

Manages the bearer tokens of the management API (/api/manage). \`create\` prints the token on a
line of its own, once: only its SHA-256 hash is stored. NAME (recorded as \`by\` and in the audit
trail): 1 to ${TOKEN_NAME_MAX} characters, no control characters or writing-direction marks, no leading or trailing whitespace,
not ${RESERVED_TOKEN_NAMES.join(' or ')} (in any case). Several tokens may share a name (a note
says so): each has its own id. \`list\` prints one line per token: id,
name, dates and state (active, expired, revoked), never the token. \`revoke\` makes a token answer
403 from then on.

Database: MONGODB_URI, else the running \`npm run dev\` server or the embedded database;
MONGODB_DATABASE, default whatsapp_chatbot.
Exit code: 0 on success, 1 on failure (unknown id, database error), 2 on bad arguments.
`;

/** `--expires-days`: absent means never; otherwise whole days within the bound tokens.ts owns. */
function expiryDays(value: string | undefined): number | null {
  if (value === undefined) return null;
  const days = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!isTokenExpiryDays(days)) {
    throw new UsageError(
      `--expires-days must be a whole number of days from ${TOKEN_EXPIRY_DAYS.min} to ${TOKEN_EXPIRY_DAYS.max}`,
    );
  }
  return days;
}

export const main: Main = async (argv, env, io) => {
  const [command, ...rest] = argv;
  if (command === 'create') {
    const { values } = parseCli(rest, { name: { type: 'string' }, 'expires-days': { type: 'string' } });
    const name = values.name;
    if (name === undefined) throw new UsageError('--name is required');
    const nameProblem = tokenNameProblem(name);
    if (nameProblem) throw new UsageError(`--name: ${nameProblem}`);
    const expiresDays = expiryDays(values['expires-days']);
    const { token, record, namesakes } = await withDataStore(env, io, (data) =>
      createToken(data, { name, expiresDays, now: new Date() }),
    );
    if (namesakes > 0) {
      io.err(
        `note: ${namesakes} other valid token${namesakes === 1 ? ' already has' : 's already have'} the name ` +
          `${JSON.stringify(name)}; the audit trail and "by" show names, so they read alike there ` +
          '(each token has its own id: `list` shows it, `revoke ID` revokes one)',
      );
    }
    io.err(`created token ${record.id} (${record.name}); it is shown once, on the next line:`);
    io.out(token);
    return 0;
  }
  if (command === 'list') {
    parseCli(rest, {});
    const now = new Date();
    const tokens = await withDataStore(env, io, (data) => data.tokens.list());
    for (const t of tokens) io.out(formatToken(t, now));
    if (!tokens.length) io.err('no tokens');
    return 0;
  }
  if (command === 'revoke') {
    const { positionals } = parseCli(rest, {}, { positionals: 1 });
    const id = positionals[0];
    if (!id) throw new UsageError('revoke needs a token id (see `list`)');
    const found = await withDataStore(env, io, (data) => data.tokens.revoke(id, new Date()));
    // Quoted as JSON: what was typed may hold control characters a terminal would act on.
    if (!found) throw new ScriptError(`no token with id ${JSON.stringify(id)} (see \`list\`)`);
    io.out(`revoked ${id}`);
    return 0;
  }
  throw new UsageError(
    command
      ? `unknown command: ${JSON.stringify(command)} (the commands are create, list and revoke)`
      : 'a command is required: create, list or revoke',
  );
};

if (require.main === module) runMain(main, HELP);
