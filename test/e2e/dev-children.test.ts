// `npm run dev` when one of the servers it started (the embedded database, Azurite) dies under it:
// it stops with a line naming what died and a non-zero exit, instead of answering webhooks with
// 5xx (or not at all) until stopped by hand; what it acknowledged is processed after a restart.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  descendants,
  startDev,
  stillRunning,
  storedAndAnswered,
  waitFor,
  type DevProcess,
} from '../helpers/dev-process';
import { signed, textNotification } from '../helpers/meta';

const SECRET = 'children-app-secret';
const env = { WHATSAPP_VERIFY_TOKEN: 'children-verify', WHATSAPP_APP_SECRET: SECRET };
/** The contract's bound: it stops everything within 10 s. */
const STOP_MS = 10_000;

/** Posts `count` signed text notifications; the ids of those answered 200. */
async function deliver(url: string, count: number): Promise<string[]> {
  const acked: string[] = [];
  for (let i = 0; i < count; i++) {
    const { message, payload } = textNotification(`4477009${String(40_000 + i).slice(1)}`, `m${i}`);
    const { body, signature } = signed(payload, SECRET);
    const answer = await fetch(`${url}/api/webhook`, {
      method: 'POST',
      headers: { 'x-hub-signature-256': signature },
      body,
    });
    if (answer.status === 200) acked.push(message.id);
  }
  return acked;
}

describe('npm run dev when a server it started dies', () => {
  const cases = [
    {
      name: 'the embedded database (FerretDB)',
      child: /\/ferretdb --handler=sqlite/,
      said: 'the embedded database (FerretDB) was killed by SIGKILL',
    },
    { name: 'Azurite', child: /azurite-queue\.js/, said: 'Azurite (pid PID) was killed by SIGKILL' },
  ];
  for (const { name, child, said } of cases) {
    it(`${name} killed: stops everything within 10 s with exit code 1, saying so; a restart processes what was acknowledged`, async () => {
      const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-children-'));
      let again: DevProcess | undefined;
      const dev = await startDev({ ...env, DEV_DATA_DIR: dataDir });
      try {
        const acked = await deliver(dev.url, 8);
        expect(acked).toHaveLength(8);
        const started = descendants(dev.child.pid as number);
        const victim = started.find((line) => child.test(line));
        const pid = Number(victim?.split(' ')[0]);
        expect(pid).toBeGreaterThan(0);
        const exited = new Promise<number | null>((resolve) => dev.child.once('exit', resolve));
        const killed = Date.now();
        process.kill(pid, 'SIGKILL');
        const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('running'), 15_000))]);
        const took = Date.now() - killed;
        await waitFor(
          async () => stillRunning(started).length === 0,
          Math.max(0, killed + STOP_MS - Date.now()),
        ).catch(() => undefined);
        expect({ code, running: stillRunning(started) }).toEqual({ code: 1, running: [] });
        expect(took).toBeLessThan(STOP_MS);
        expect(dev.output()).toContain(
          `${said.replace('PID', String(pid))}: acknowledged webhooks wait in the queues; ` +
            'start `npm run dev` again, stopping',
        );

        again = await startDev({ ...env, DEV_DATA_DIR: dataDir });
        expect(await storedAndAnswered(again, acked)).toEqual({ stored: acked.length });
      } finally {
        await again?.stop();
        await dev.stop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    }, 90_000);
  }
});
