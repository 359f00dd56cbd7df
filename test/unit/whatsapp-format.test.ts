// Markdown as models write it, converted to WhatsApp's own formatting before an AI answer is sent.
import { describe, expect, it } from 'vitest';
import { asSent } from '../../shared/bot/ai-responder';
import { toWhatsApp } from '../../shared/bot/whatsapp-format';
import { cpuClock } from '../helpers/cpu';

describe('toWhatsApp', () => {
  it.each([
    ['**bold**', '*bold*'],
    ['__bold__', '*bold*'],
    ['*italic*', '_italic_'],
    ['_italic_', '_italic_'],
    ['~~struck~~', '~struck~'],
    ['~struck~', '~struck~'],
    ['***both***', '_*both*_'],
    ['a **bold** word, and *one* more.', 'a *bold* word, and _one_ more.'],
    ['(**bold**)', '(*bold*)'],
    ['**Note:** read this', '*Note:* read this'],
  ])('emphasis %j', (markdown, whatsapp) => {
    expect(toWhatsApp(markdown)).toBe(whatsapp);
  });

  it.each([
    ['**bold with _italic_ inside**', '*bold with _italic_ inside*'],
    ['*italic with **bold** inside*', '_italic with *bold* inside_'],
    ['**bold with ~~struck~~ inside**', '*bold with ~struck~ inside*'],
    ['_**bold italic**_', '_*bold italic*_'],
  ])('nested %j', (markdown, whatsapp) => {
    expect(toWhatsApp(markdown)).toBe(whatsapp);
  });

  it.each([
    '**never closed',
    'opened **here and *there',
    'a lone * star and a lone _ underscore',
    '2*3*4 = 24 and 2 * 3 * 4 too',
    'snake_case_name and __init__py and a_b_c',
    'foo*bar*baz and foo**bar**baz',
    '~~~ not a fence here ~',
    '~~~three~~~',
    'mail me at john_doe_jr@example.com',
    '** spaced **',
    '**bold\nacross lines**',
  ])('leaves alone %j', (text) => {
    expect(toWhatsApp(text)).toBe(text);
  });

  it.each([
    'https://example.com/a_b_c/d*e*f?x=__y__',
    'see https://example.com/some_path_here and www.example.com/x_y_z',
    'http://a.example/*star*/_under_/~~tilde~~',
  ])('leaves URLs alone: %j', (text) => {
    expect(toWhatsApp(text)).toBe(text);
  });

  it('converts emphasis around a URL, and not the URL', () => {
    expect(toWhatsApp('**https://example.com/a_b**')).toBe('*https://example.com/a_b*');
    expect(toWhatsApp('_see https://example.com/x_y_')).toBe('_see https://example.com/x_y_');
  });

  it.each([
    ['# Title', '*Title*'],
    ['### A **bold** heading ###', '*A bold heading*'],
    ['## _Intro_', '*_Intro_*'],
    ['#hashtag', '#hashtag'],
    ['# C#', '*C#*'],
    ['## Title ##', '*Title*'],
    ['#', ''],
    ['Title\n=====', '*Title*'],
    ['Sub title\n---', '*Sub title*'],
  ])('heading %j', (markdown, whatsapp) => {
    expect(toWhatsApp(markdown)).toBe(whatsapp);
  });

  it.each([
    ['[the docs](https://example.com/docs)', 'the docs (https://example.com/docs)'],
    ['[https://example.com](https://example.com)', 'https://example.com'],
    ['[**bold** link](https://example.com/a_b "title")', '*bold* link (https://example.com/a_b)'],
    ['[wiki](https://en.wikipedia.org/wiki/Foo_(bar))', 'wiki (https://en.wikipedia.org/wiki/Foo_(bar))'],
    ['[me@example.com](mailto:me@example.com)', 'me@example.com'],
    ['[+1 555 0100](tel:+1 555 0100)', '[+1 555 0100](tel:+1 555 0100)'],
    ['[](https://example.com)', 'https://example.com'],
    ['<https://example.com/a_b>', 'https://example.com/a_b'],
    ['![a cat](https://example.com/cat.png)', 'a cat (https://example.com/cat.png)'],
    ['![](https://example.com/cat.png)', 'https://example.com/cat.png'],
    ['[![badge](https://e.com/b.svg)](https://e.com)', 'badge (https://e.com/b.svg) (https://e.com)'],
    ['[not a link] (x)', '[not a link] (x)'],
    ['see [1] and [2]', 'see [1] and [2]'],
  ])('link %j', (markdown, whatsapp) => {
    expect(toWhatsApp(markdown)).toBe(whatsapp);
  });

  it('drops horizontal rules, and one of the blank lines around them', () => {
    expect(toWhatsApp('one\n\n---\n\ntwo\n\n***\n\nthree\n\n___\n')).toBe('one\n\ntwo\n\nthree');
    expect(toWhatsApp('---\n\ntext')).toBe('text');
    expect(toWhatsApp('- - -\ntext')).toBe('text');
  });

  it('keeps lists and quotes, converting their text', () => {
    expect(toWhatsApp('- **one**\n* two\n+ three\n  - _nested_')).toBe(
      '- *one*\n- two\n- three\n  - _nested_',
    );
    expect(toWhatsApp('1. **First**\n2) second')).toBe('1. *First*\n2) second');
    expect(toWhatsApp('> a **quoted** line\n> # quoted title')).toBe('> a *quoted* line\n> *quoted title*');
    expect(toWhatsApp('> > **nested**')).toBe('> > *nested*');
  });

  it('leaves code untouched: fenced blocks (closed or not) and inline code', () => {
    const fenced = '```python\nx = a_b * c_d  # **not bold**\n# not a heading\n---\n```';
    expect(toWhatsApp(`**Code:**\n${fenced}\nafter **bold**`)).toBe(`*Code:*\n${fenced}\nafter *bold*`);
    expect(toWhatsApp('~~~\n**x**\n~~~\n**y**')).toBe('~~~\n**x**\n~~~\n*y*');
    expect(toWhatsApp('- item\n  ```\n  *x*\n  ```')).toBe('- item\n  ```\n  *x*\n  ```');
    // A fence never closed (an answer cut short) runs to the end.
    expect(toWhatsApp('```\n**x**\n# y')).toBe('```\n**x**\n# y');
    expect(toWhatsApp('run `a_b **c**` now, **really**')).toBe('run `a_b **c**` now, *really*');
    expect(toWhatsApp('```mono **x**``` and **y**')).toBe('```mono **x**``` and *y*');
    expect(toWhatsApp('``a ` b`` **c**')).toBe('``a ` b`` *c*');
    expect(toWhatsApp('an unclosed ` tick **c**')).toBe('an unclosed ` tick *c*');
  });

  it('leaves tables as they are', () => {
    const table = '| **a** | b_c |\n|---|:---:|\n| *1* | [x](https://e.com) |';
    expect(toWhatsApp(`**Table:**\n${table}\n\n**after**`)).toBe(`*Table:*\n${table}\n\n*after*`);
  });

  it('writes escaped marks as themselves', () => {
    expect(toWhatsApp('5 \\* 3 and \\_x\\_ and \\# no')).toBe('5 * 3 and _x_ and # no');
  });

  it('converts a whole answer as a model writes it', () => {
    const markdown = [
      '## Opening hours',
      '',
      'We are open **Monday to Friday**, *9:00–17:00*.',
      '',
      '---',
      '',
      '1. Call us at [our line](tel:+15550100)',
      '2. Or write to `support@example.com`',
      '',
      '> ~~Closed on Sundays~~ Open on Sundays too!',
    ].join('\r\n');
    expect(toWhatsApp(markdown)).toBe(
      [
        '*Opening hours*',
        '',
        'We are open *Monday to Friday*, _9:00–17:00_.',
        '',
        '1. Call us at our line (tel:+15550100)',
        '2. Or write to `support@example.com`',
        '',
        '> ~Closed on Sundays~ Open on Sundays too!',
      ].join('\n'),
    );
  });

  it('takes time in proportion to the text on pathological input (a model can be made to write it)', () => {
    // CPU time, not the wall clock: about 1 s of it, which a loaded machine stretched past 5 s.
    const spent = cpuClock();
    for (const text of [
      '['.repeat(100_000),
      '[a](b'.repeat(20_000),
      '_a '.repeat(30_000) + 'a* '.repeat(30_000),
      '` `` '.repeat(20_000),
      `a|b\n${' '.repeat(100_000)}x`,
      `#${' '.repeat(100_000)}x`,
      `# a${' '.repeat(100_000)}b`,
      '> '.repeat(100_000),
      `${'['.repeat(10_000)}a${'](x)'.repeat(10_000)}`,
    ])
      toWhatsApp(text);
    // Each took over 30 s when a scan started again at every bracket, pipe row or mark.
    expect(spent()).toBeLessThan(5_000);
  });

  it('leaves plain text as it is', () => {
    for (const text of ['', 'Hello!', 'a\n\nb\n', '  indented', 'emoji 🙂 * ok', 'cost: $5 - $10'])
      expect(toWhatsApp(text)).toBe(text);
  });
});

describe('asSent', () => {
  it("puts an answer in WhatsApp's formatting, unless that would leave it blank", () => {
    expect(asSent('**yes**')).toBe('*yes*');
    expect(asSent('---')).toBe('---');
    expect(asSent('# ')).toBe('# ');
  });
});
