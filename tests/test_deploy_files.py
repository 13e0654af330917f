"""Offline checks of the deployment files nothing here can run: compose.yaml (no compose engine, no registry to pull
postgres/azurite/mlflow from) and deploy/azure/main.bicep (no Azure; `az bicep build` needs the network).
A structural lint, not a compiler: brackets and strings balance, every parameter is used, every secretRef names a
secret of its app, both apps have HTTP probes, the form has sticky sessions; compose wires what the README says."""
import re
import yaml
from conftest import ROOT

BICEP = (ROOT/'deploy'/'azure'/'main.bicep').read_text()
README = (ROOT/'README.md').read_text()


def _strip_bicep(text: str) -> str:
    "The Bicep text without comments and string contents (quotes kept), so brackets can be counted."
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith('//', i): i = text.find('\n', i) if '\n' in text[i:] else n; continue
        if text.startswith('/*', i): i = text.index('*/', i) + 2; continue
        if text[i] == "'":
            j = i + 1
            while text[j] != "'" or text[j - 1] == '\\':
                if text[j] == '\n': raise AssertionError(f'unterminated string at offset {i}')
                j += 1
            out.append("''"); i = j + 1; continue
        out.append(text[i]); i += 1
    return ''.join(out)


def test_bicep_brackets_balance():
    stack, pairs = [], {')': '(', ']': '[', '}': '{'}
    for k, ch in enumerate(_strip_bicep(BICEP)):
        if ch in '([{': stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], f'unbalanced {ch!r} at stripped offset {k}'
    assert not stack, f'unclosed {stack}'


def test_bicep_every_param_is_used_and_secure_ones_are_secrets():
    params = re.findall(r'^param (\w+) ', BICEP, re.M)
    assert {'apiImage', 'formImage', 'apiToken', 'dbUrl', 'storeUrl', 'identityId'} <= set(params)
    body = re.sub(r'^param .*$', '', BICEP, flags=re.M)
    for p in params: assert re.search(rf'\b{p}\b', body), f'param {p} is never used'
    for p in ('apiToken', 'dbUrl'): assert re.search(rf'@secure\(\)\n(@description\(.*\)\n)?param {p} ', BICEP), p


def _apps():
    "Each container app's text: from its `resource` line to the next top-level declaration."
    parts = re.split(r'^(?=resource |output )', BICEP, flags=re.M)
    return {re.match(r"resource (\w+) '([^']+)'", p).group(1): p for p in parts
            if p.startswith('resource ') and 'Microsoft.App/containerApps@' in p.splitlines()[0]}


def test_bicep_apps_have_probes_secrets_and_sticky_form():
    apps = _apps()
    assert set(apps) == {'api', 'form'}
    env_refs = set(re.findall(r"secretRef: '([\w-]+)'", BICEP))
    for name, text in apps.items():
        secrets = set(re.findall(r"\{ name: '([\w-]+)', value: \w+ \}", text))
        assert env_refs <= secrets, (name, env_refs - secrets)
        kinds = set(re.findall(r"type: '(Liveness|Readiness|Startup)'", text))
        assert {'Liveness', 'Readiness'} <= kinds, (name, kinds)
        assert 'httpGet' in text and 'commonEnv' in text
    assert "stickySessions: { affinity: 'sticky' }" in apps['form']
    assert 'stickySessions' not in apps['api']
    assert "path: '/health', port: 8000" in apps['api']
    assert "targetPort: 8866" in apps['form'] and "targetPort: 8000" in apps['api']


def test_compose_wires_the_documented_settings():
    c = yaml.safe_load((ROOT/'compose.yaml').read_text())
    assert {'api', 'form', 'postgres', 'azurite', 'mlflow'} <= set(c['services'])
    for svc in ('api', 'form'):
        s = c['services'][svc]
        assert s['build']['target'] == svc
        env = s['environment']
        for var in ('DRUG_NBDEV_DB_URL', 'DRUG_NBDEV_STORE', 'MLFLOW_TRACKING_URI', 'DRUG_NBDEV_API_TOKEN'):
            assert var in env and f'`{var}`' in README, var
        assert env['DRUG_NBDEV_DB_URL'].startswith('postgresql://') and '@postgres:' in env['DRUG_NBDEV_DB_URL']
        assert 'BlobEndpoint=http://azurite:10000/' in env['DRUG_NBDEV_STORE']
        assert env['MLFLOW_TRACKING_URI'] == 'http://mlflow:5000'
        assert ':?' in env['DRUG_NBDEV_API_TOKEN']   # compose refuses to start without a token
    for name, s in c['services'].items():
        for p in s.get('ports', []): assert p.startswith('127.0.0.1:'), (name, p)


def test_dockerfile_base_is_a_build_argument_defaulting_to_python():
    text = (ROOT/'Dockerfile').read_text()
    assert re.search(r'^ARG BASE_IMAGE=python:3\.11-slim', text, re.M)
    froms = re.findall(r'^FROM (\S+)', text, re.M)
    assert froms.count('${BASE_IMAGE}') == 2 and set(re.findall(r'^FROM \S+ AS (\w+)', text, re.M)) >= {'api', 'form'}
    assert re.findall(r'^CMD \[', text, re.M) and not re.findall(r'^CMD [^\[]', text, re.M)   # exec form only
