'use strict';
// index.d.ts matches the API: TypeScript compiles a use of every part of it
// from CommonJS and from an ES module (and refuses misuses), and the class
// it declares has exactly the runtime class's public members.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { readFileSync } = require('node:fs');
const path = require('node:path');
const Facsimile = require('..');

test('TypeScript compiles the typed uses of the package', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types', 'tsconfig.json')], { stdio: 'pipe' });
});

test('index.d.ts declares the public members of the class, no more, no fewer', () => {
  const dts = readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');
  const body = dts.slice(dts.indexOf('declare class Facsimile'), dts.indexOf('declare namespace Facsimile'));
  const declared = { instance: new Set(), static: new Set() };
  for (const m of body.matchAll(/^ {2}(static )?(?:readonly )?(?:get |set )?(\w+)[(:<?]/gm)) {
    if (m[2] === 'constructor') continue;
    declared[m[1] ? 'static' : 'instance'].add(m[2]);
  }
  const isPublic = (k) => !k.startsWith('_') || k === '_hostname' || k === '_advance';
  const runtime = new Set(Object.getOwnPropertyNames(Facsimile.prototype).filter((k) => k !== 'constructor' && isPublic(k)));
  const node = new Facsimile('n');
  for (const k of Object.keys(node)) if (isPublic(k)) runtime.add(k);
  assert.deepEqual([...declared.instance].sort(), [...runtime].sort());
  const statics = Object.getOwnPropertyNames(Facsimile).filter((k) => !['length', 'name', 'prototype'].includes(k) && isPublic(k));
  assert.deepEqual([...declared.static].sort(), statics.sort());
});

test('Options declares every option the constructor reads', () => {
  const core = readFileSync(path.join(__dirname, '..', 'src', 'core.js'), 'utf8');
  const read = new Set([...core.matchAll(/\bopts\.(\w+)/g)].map((m) => m[1]));
  const dts = readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');
  const body = dts.slice(dts.indexOf('interface Options {'), dts.indexOf('type Message ='));
  const declared = new Set([...body.matchAll(/^ {4}(\w+)\?:/gm)].map((m) => m[1]));
  assert.ok(read.has('observer'));
  assert.deepEqual([...declared].sort(), [...read].sort());
});

