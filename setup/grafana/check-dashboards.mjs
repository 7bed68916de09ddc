#!/usr/bin/env node
// Checks Grafana dashboard JSON files against Grafana's own schema: the dashboard model and the core panels'
// options and field config from @grafana/schema (the types Grafana's frontend is built with), type-checked by
// TypeScript. Each dashboard becomes object literals with `satisfies`, so an unknown key, a wrong type or a
// value outside an enum is an error, as it would be in Grafana's own code.
//
//   node check-dashboards.mjs DASHBOARD.json...     prints `ok FILE` per valid file, one line per problem, exit 1
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CFG = '@grafana/schema/dist/esm/raw/composable';
// Grafana's core panels with a schema in @grafana/schema: panel `type` -> module of its options/field config.
const PANELS = {
  barchart: `${CFG}/barchart/panelcfg/x/BarChartPanelCfg_types.gen`,
  bargauge: `${CFG}/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen`,
  candlestick: `${CFG}/candlestick/panelcfg/x/CandlestickPanelCfg_types.gen`,
  gauge: `${CFG}/gauge/panelcfg/x/GaugePanelCfg_types.gen`,
  histogram: `${CFG}/histogram/panelcfg/x/HistogramPanelCfg_types.gen`,
  piechart: `${CFG}/piechart/panelcfg/x/PieChartPanelCfg_types.gen`,
  stat: `${CFG}/stat/panelcfg/x/StatPanelCfg_types.gen`,
  'state-timeline': `${CFG}/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen`,
  table: `${CFG}/table/panelcfg/x/TablePanelCfg_types.gen`,
  text: `${CFG}/text/panelcfg/x/TextPanelCfg_types.gen`,
  timeseries: `${CFG}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen`,
};

// JSON spells enums as their values: `Json<T>` turns string enums into their literal strings (numeric enums
// already accept their numbers). Options and custom field config may omit anything: Grafana fills the
// plugin's defaults on load, hence `DeepPartial` there. A datasource query carries its own fields beside
// DataQuery's, which is how the schema's generic AnnotationQuery<TQuery> and Panel targets are meant.
const PRELUDE = `import type * as schema from '@grafana/schema';
type Json<T> = T extends string ? \`\${T}\` : T extends readonly (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> } : T;
type DeepPartial<T> = T extends readonly (infer U)[] ? DeepPartial<U>[]
  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
type Query = schema.DataQuery & Record<string, unknown>;
type Dashboard = Omit<schema.Dashboard, 'annotations'> & {
  annotations?: { list?: schema.AnnotationQuery<Query>[] };
};
`;

function literal(value) {
  return JSON.stringify(value ?? {}, null, 2);
}

/** TypeScript source whose type errors are exactly the dashboard's schema violations. */
export function dashboardSource(board) {
  const lines = [PRELUDE];
  const used = new Set();
  const panels = (board.panels ?? []).flatMap((p) => (p.type === 'row' ? [p, ...(p.panels ?? [])] : [p]));
  for (const panel of panels) {
    if (panel.type !== 'row' && !PANELS[panel.type]) {
      lines.push(`// panel "${panel.title}"\nconst unknownPanelType: 'a core panel type' = ${JSON.stringify(panel.type)};`);
    }
    if (PANELS[panel.type]) used.add(panel.type);
  }
  for (const type of used) lines.push(`import type * as ${ident(type)} from '${PANELS[type]}';`);
  // One literal per part: TypeScript reports one problem per literal, so each part gets its own report.
  const { panels: _p, templating, annotations, ...model } = board;
  const parts = [['the dashboard', 'Dashboard', { ...model, panels: [], templating: {}, annotations: {} }]];
  for (const variable of templating?.list ?? []) parts.push([`variable "${variable.name}"`, 'schema.VariableModel', variable]);
  for (const item of annotations?.list ?? []) parts.push([`annotation "${item.name}"`, 'schema.AnnotationQuery<Query>', item]);
  for (const panel of panels) {
    const type = panel.type === 'row' ? 'schema.RowPanel' : 'schema.Panel';
    parts.push([`panel "${panel.title}" (${panel.type})`, type, panel.type === 'row' ? { ...panel, panels: [] } : panel]);
  }
  parts.forEach(([where, type, value], i) => {
    lines.push(`// ${where}\nexport const part${i} = ${literal(value)} satisfies Json<${type}>;`);
  });
  panels.forEach((panel, i) => {
    const where = `panel "${panel.title}" (${panel.type})`;
    for (const [j, target] of (panel.targets ?? []).entries()) {
      lines.push(`// ${where} target ${j}\nexport const q${i}_${j} = ${literal(target)} satisfies Json<Query>;`);
    }
    if (!PANELS[panel.type]) return;
    const cfg = ident(panel.type);
    lines.push(`// ${where} options\nexport const o${i} = ${literal(panel.options)} satisfies Json<DeepPartial<${cfg}.Options>>;`);
    const custom = panel.fieldConfig?.defaults?.custom;
    if (custom !== undefined) {
      lines.push(
        `// ${where} fieldConfig.defaults.custom\n` +
          `export const c${i} = ${literal(custom)} satisfies Json<DeepPartial<${cfg}.FieldConfig>>;`,
      );
    }
  });
  return lines.join('\n');
}

function ident(type) {
  return `panel_${type.replace(/\W/g, '_')}`;
}

/** Problems of one dashboard, each `where: message`; empty when it satisfies the schema. */
export function check(board, name = 'dashboard') {
  const file = path.join(HERE, `__${name.replace(/\W/g, '_')}.check.ts`);
  const source = dashboardSource(board);
  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts'],
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  const exists = host.fileExists.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.readFile = (f) => (path.resolve(f) === file ? source : read(f));
  host.fileExists = (f) => path.resolve(f) === file || exists(f);
  host.getSourceFile = (f, lang, ...rest) =>
    path.resolve(f) === file ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang, ...rest);
  const program = ts.createProgram([file], options, host);
  const lines = source.split('\n');
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (!d.file || path.resolve(d.file.fileName) !== file) return `setup: ${message}`;
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    let section = line;
    while (section > 0 && !lines[section].startsWith('// ')) section -= 1;
    const [first] = message.split(/ {2,}|\n/);
    return `${lines[section].slice(3)}: ${lines[line].trim()} -- ${first}`;
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let failed = false;
  for (const arg of process.argv.slice(2)) {
    const problems = check(JSON.parse(fs.readFileSync(arg, 'utf8')), path.basename(arg, '.json'));
    for (const problem of problems) console.log(`${arg}: ${problem}`);
    if (problems.length === 0) console.log(`ok ${arg}`);
    failed ||= problems.length > 0;
  }
  process.exit(failed ? 1 : 0);
}
