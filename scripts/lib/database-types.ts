// What the database tooling hands around: a started (or configured) server and a log line sink.

export type DatabaseKind = 'uri' | 'mongod' | 'ferretdb' | 'dev-server';

export interface ResolvedDatabase {
  uri: string;
  kind: DatabaseKind;
  description: string;
  stop(): Promise<void>;
  /**
   * A server started here (not `uri` or `dev-server`): resolves, saying how, if its process ends
   * without `stop()` (killed, crashed); never otherwise.
   */
  exited?: Promise<string>;
}

export type Log = (line: string) => void;

// Diagnostics go to stderr: scripts print their results (tokens, lists) on stdout.
export const defaultLog: Log = (line) => process.stderr.write(`${line}\n`);
