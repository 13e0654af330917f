"""Print the image's requirements, one a line: settings.ini's `requirements` without TensorFlow, plus the [azure] extra.

The served models are scikit-learn pipelines; TensorFlow (about 600 MB installed) is only needed to train or serve the
network candidate, so the image leaves it out. Run as `python3 deploy/requirements.py [settings.ini]` (stdlib only).
"""
import configparser, shlex, sys

LEFT_OUT = ('tensorflow', 'tensorflow-cpu')   # distributions the image does without

def requirement_name(spec: str) -> str:
    "The distribution name of a requirement spec: 'tensorflow-cpu>=2.16,<2.22' -> 'tensorflow-cpu'."
    for i, ch in enumerate(spec):
        if ch in '<>=!~[; @': return spec[:i].strip().lower()
    return spec.strip().lower()

def image_requirements(path: str = 'settings.ini') -> list[str]:
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(path, encoding='utf-8')
    d = cfg['DEFAULT']
    reqs = shlex.split(d.get('requirements', '')) + shlex.split(d.get('azure_requirements', ''))
    return [r for r in reqs if requirement_name(r) not in LEFT_OUT]

if __name__ == '__main__':
    print('\n'.join(image_requirements(*sys.argv[1:])))
